"""ONNX -> torch: an nn.Module that runs an ONNX graph with torch operations.

Float initializers become trainable parameters, so the module can be fine-tuned or distilled and exported
back (torch.onnx.export) or saved as a `.pt2` (torch.export). Shape arithmetic (Shape, Gather on shapes,
Concat of dims, ...) is evaluated on Python lists of ints, never on tensors, so that torch.export sees
symbolic sizes rather than data-dependent values.

Supports the operators of MLP / CNN / transformer encoder exports (see OPS); anything else raises
UnsupportedOp, which steps report before the job runs where they can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

SMALL_INT = 16  # integer constants up to this many elements are treated as shape values


class UnsupportedOp(Exception):
    pass


INT = (int, torch.SymInt)  # a dimension: concrete, or symbolic while torch.export traces


def _is_shape(v) -> bool:
    return isinstance(v, (list, *INT)) and not isinstance(v, bool)


def _t(v, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor from a shape value (list / int) or a tensor."""
    if isinstance(v, torch.Tensor):
        return v
    return torch.tensor(v, dtype=torch.int64, device=like.device if like is not None else None)


def _elementwise(fn, a, b):
    if _is_shape(a) and _is_shape(b):
        if isinstance(a, INT) and isinstance(b, INT):
            return fn(a, b)
        a = a if isinstance(a, list) else [a] * len(b)
        b = b if isinstance(b, list) else [b] * len(a)
        return [fn(x, y) for x, y in zip(a, b, strict=True)]
    ta = a if isinstance(a, torch.Tensor) else _t(a, b if isinstance(b, torch.Tensor) else None)
    tb = b if isinstance(b, torch.Tensor) else _t(b, ta)
    return fn(ta, tb)


def _div(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ta, tb = _t(a), _t(b)
        if not ta.is_floating_point() and not tb.is_floating_point():
            return torch.div(ta, tb, rounding_mode="trunc")
        return ta / tb
    return _elementwise(lambda x, y: x // y if isinstance(x, INT) else x / y, a, b)


def _axes(node_attrs, inputs, position: int):
    """Axes from the attribute (old opsets) or the input at `position` (new opsets)."""
    if "axes" in node_attrs:
        return list(node_attrs["axes"])
    if len(inputs) > position and inputs[position] is not None:
        v = inputs[position]
        return [v] if isinstance(v, INT) else list(v) if isinstance(v, list) else v.tolist()
    return None


def _reshape(x, shape, allowzero=0):
    if _is_shape(x):  # shape arithmetic: a vector of dims stays a list, a single dim an int
        flat = x if isinstance(x, list) else [x]
        if len(shape) == 1:
            return flat
        if len(shape) == 0 and len(flat) == 1:
            return flat[0]
        x = _t(x)
    target = [x.shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(shape)]
    return x.reshape(target)


def _gather(data, index, axis=0):
    if _is_shape(data):
        if isinstance(index, INT):
            return data[index]
        if isinstance(index, list):
            return [data[i] for i in index]
        data = _t(data)
    if isinstance(index, INT):
        return data.select(axis, index if index >= 0 else data.shape[axis] + index)
    idx = _t(index, data)
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    return torch.index_select(data, axis, idx.reshape(-1)).reshape(
        *data.shape[:axis], *idx.shape, *data.shape[axis + 1:])


def _slice(data, starts, ends, axes=None, steps=None):
    def listed(v):
        return [v] if isinstance(v, INT) else list(v) if isinstance(v, list) else v.tolist()

    starts, ends = listed(starts), listed(ends)
    axes = list(range(len(starts))) if axes is None else listed(axes)
    steps = [1] * len(starts) if steps is None else listed(steps)
    if any(st < 1 for st in steps):
        raise UnsupportedOp("Slice with a negative step")
    big = 2**62  # exporters write int64 max / min for "to the end"
    if _is_shape(data):
        (start, end, step), = zip(starts, ends, steps, strict=True)
        return data[slice(None if start <= -big else start, None if abs(end) >= big else end, step)]
    index = [slice(None)] * data.dim()
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        index[a % data.dim()] = slice(None if s <= -big else s, None if abs(e) >= big else e, st)
    return data[tuple(index)]


def _concat(values, axis):
    if all(_is_shape(v) for v in values):
        out = []
        for v in values:
            out.extend(v if isinstance(v, list) else [v])
        return out
    like = next(v for v in values if isinstance(v, torch.Tensor))
    return torch.cat([_t(v, like).reshape(-1) if _is_shape(v) else v for v in values], dim=axis)


def _expand(x, shape):
    shape = list(shape)
    rank = max(x.dim(), len(shape))
    x = x.reshape([1] * (rank - x.dim()) + list(x.shape))
    shape = [1] * (rank - len(shape)) + shape
    return x.expand([s if s != 1 else -1 for s in shape])


def _unsqueeze(x, axes):
    if isinstance(x, INT) and axes in ([0], [-1]):
        return [x]
    x = _t(x)
    for a in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(x, axes):
    if isinstance(x, list) and len(x) == 1 and (axes is None or axes == [0]):
        return x[0]
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _pool(fn, x, a):
    kernel = a["kernel_shape"]
    pads = a.get("pads", [0] * 2 * len(kernel))
    n = len(kernel)
    if any(pads[i] != pads[i + n] for i in range(n)):
        x = F.pad(x, [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])])
        pads = [0] * 2 * n
    return fn(x, kernel, a.get("strides", kernel), pads[:n], ceil_mode=bool(a.get("ceil_mode", 0)))


def _conv(x, w, b, a):
    n = w.dim() - 2
    pads = a.get("pads", [0] * 2 * n)
    auto = a.get("auto_pad", b"NOTSET")
    if auto not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOp("Conv auto_pad")
    if any(pads[i] != pads[i + n] for i in range(n)):
        x = F.pad(x, [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])])
        pads = [0] * 2 * n
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return fn(x, w, b, a.get("strides", [1] * n), pads[:n], a.get("dilations", [1] * n), a.get("group", 1))


def _gemm(x, w, c, a):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


def _layer_norm(x, scale, bias, a):
    axis = a.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, a.get("epsilon", 1e-5))


def _reduce(fn):
    def run(x, axes_input=None, a=None):
        a = a or {}
        axes = a.get("axes") if "axes" in a else axes_input
        keep = bool(a.get("keepdims", 1))
        if axes is None or (isinstance(axes, list) and not axes):
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        axes = [axes] if isinstance(axes, INT) else list(axes)
        return fn(x, axes, keep)
    return run


def _range(start, limit, delta):
    if all(isinstance(v, INT) for v in (start, limit, delta)):
        return torch.arange(start, limit, delta)
    return torch.arange(_t(start).item(), _t(limit).item(), _t(delta).item())


def _cast(x, to):
    dtype = _DTYPES[to]
    if _is_shape(x):
        if dtype in (torch.int64, torch.int32):
            return x
        return _t(x).to(dtype)
    return x.to(dtype)


_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.INT16: torch.int16,
}


def _where(c, x, y):
    if _is_shape(c) and _is_shape(x) and _is_shape(y):
        c = c if isinstance(c, list) else [c]
        return [xi if ci else yi for ci, xi, yi in zip(c, x if isinstance(x, list) else [x] * len(c),
                                                      y if isinstance(y, list) else [y] * len(c), strict=True)]
    like = next((v for v in (x, y, c) if isinstance(v, torch.Tensor)), None)
    return torch.where(_t(c, like).bool(), _t(x, like), _t(y, like))


def _compare(fn):
    return lambda a, b: _elementwise(fn, a, b)


def _split(x, split, a, n_out):
    axis = a.get("axis", 0)
    sizes = split if split is not None else a.get("split")
    if sizes is None:
        sizes = [x.shape[axis] // n_out] * n_out
    return list(torch.split(x, list(sizes), dim=axis))


OPS = {
    "Add": lambda a, b: _elementwise(torch.add if not _is_shape(a) or not _is_shape(b) else lambda x, y: x + y, a, b),
    "Sub": lambda a, b: _elementwise(lambda x, y: x - y, a, b),
    "Mul": lambda a, b: _elementwise(lambda x, y: x * y, a, b),
    "Div": _div,
    "Pow": lambda a, b: torch.pow(_t(a), b if not isinstance(b, torch.Tensor) or b.dim() else b),
    "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Neg": lambda x: -x, "Abs": torch.abs,
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
    "IsNaN": torch.isnan, "Not": lambda x: torch.logical_not(_t(x)),
    "And": lambda a, b: torch.logical_and(_t(a), _t(b)), "Or": lambda a, b: torch.logical_or(_t(a), _t(b)),
    "Equal": _compare(lambda x, y: x == y), "Less": _compare(lambda x, y: x < y),
    "Greater": _compare(lambda x, y: x > y), "LessOrEqual": _compare(lambda x, y: x <= y),
    "GreaterOrEqual": _compare(lambda x, y: x >= y),
    "Max": lambda *v: _elementwise(lambda x, y: torch.maximum(x, y) if isinstance(x, torch.Tensor) else max(x, y),
                                   *v) if len(v) == 2 else v[0],
    "Min": lambda *v: _elementwise(lambda x, y: torch.minimum(x, y) if isinstance(x, torch.Tensor) else min(x, y),
                                   *v) if len(v) == 2 else v[0],
    "Where": _where, "Identity": lambda x: x, "Range": _range,
    "MatMul": torch.matmul,
}


def _run_node(op: str, args: list, a: dict, n_out: int):
    """Operators that need attributes or optional inputs."""
    if op in OPS:
        return OPS[op](*[v for v in args if v is not None])
    get = lambda i: args[i] if len(args) > i else None  # noqa: E731
    if op == "Gemm":
        return _gemm(args[0], args[1], get(2), a)
    if op == "Conv":
        return _conv(args[0], args[1], get(2), a)
    if op == "MaxPool":
        return _pool(F.max_pool2d if len(a["kernel_shape"]) == 2 else F.max_pool1d, args[0], a)
    if op == "AveragePool":
        return _pool(lambda x, k, s, p, ceil_mode: F.avg_pool2d(x, k, s, p, ceil_mode=ceil_mode,
                                                                count_include_pad=bool(a.get("count_include_pad", 0))),
                     args[0], a)
    if op == "GlobalAveragePool":
        return args[0].mean(dim=list(range(2, args[0].dim())), keepdim=True)
    if op == "GlobalMaxPool":
        return args[0].amax(dim=list(range(2, args[0].dim())), keepdim=True)
    if op == "BatchNormalization":
        return F.batch_norm(args[0], args[3], args[4], args[1], args[2], False, 0.0, a.get("epsilon", 1e-5))
    if op == "LayerNormalization":
        return _layer_norm(args[0], get(1), get(2), a)
    if op == "Softmax":
        return torch.softmax(args[0], a.get("axis", -1))
    if op == "LogSoftmax":
        return torch.log_softmax(args[0], a.get("axis", -1))
    if op == "Gelu":
        return F.gelu(args[0], approximate="tanh" if a.get("approximate", b"none") in (b"tanh", "tanh") else "none")
    if op == "LeakyRelu":
        return F.leaky_relu(args[0], a.get("alpha", 0.01))
    if op == "HardSigmoid":
        return torch.clamp(a.get("alpha", 0.2) * args[0] + a.get("beta", 0.5), 0, 1)
    if op == "Clip":
        lo, hi = (get(1), get(2)) if len(args) > 1 else (a.get("min"), a.get("max"))
        return torch.clamp(args[0], _scalar(lo), _scalar(hi))
    if op == "Flatten":
        axis = a.get("axis", 1)
        return args[0].reshape(math.prod(args[0].shape[:axis]) if axis else 1, -1)
    if op == "Reshape":
        return _reshape(args[0], args[1] if _is_shape(args[1]) else args[1].tolist(), a.get("allowzero", 0))
    if op == "Transpose":
        perm = a.get("perm", list(reversed(range(args[0].dim()))))
        return args[0].permute(perm)
    if op == "Shape":
        shape = ([len(args[0])] if isinstance(args[0], list) else []) if _is_shape(args[0]) else list(args[0].shape)
        return shape[a.get("start", 0): a.get("end", len(shape))]
    if op == "Size":
        return math.prod(args[0].shape)
    if op == "Gather":
        return _gather(args[0], args[1], a.get("axis", 0))
    if op == "GatherElements":
        idx = _t(args[1], args[0])
        axis = a.get("axis", 0)
        return torch.gather(args[0], axis, torch.where(idx < 0, idx + args[0].shape[axis], idx))
    if op == "GatherND":
        return _gather_nd(args[0], _t(args[1], args[0]), a.get("batch_dims", 0))
    if op == "Unsqueeze":
        return _unsqueeze(args[0], _axes(a, args, 1))
    if op == "Squeeze":
        return _squeeze(args[0], _axes(a, args, 1))
    if op == "Concat":
        return _concat(args, a.get("axis", 0))
    if op == "Slice":
        if "starts" in a:
            return _slice(args[0], a["starts"], a["ends"], a.get("axes"))
        return _slice(args[0], args[1], args[2], get(3), get(4))
    if op == "Cast":
        return _cast(args[0], a["to"])
    if op == "ConstantOfShape":
        value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        shape = args[0] if _is_shape(args[0]) else None
        if value.dtype.kind in "iu" and isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], INT) \
                and shape[0] <= SMALL_INT:
            return [int(value.item())] * shape[0]  # a vector of dims, for shape arithmetic
        return torch.full(list(args[0]) if _is_shape(args[0]) else args[0].tolist(), value.item(),
                          dtype=torch.from_numpy(value).dtype)
    if op == "Expand":
        return _expand(args[0], args[1] if _is_shape(args[1]) else args[1].tolist())
    if op == "Tile":
        return args[0].repeat(args[1] if _is_shape(args[1]) else args[1].tolist())
    if op in ("Dropout",):
        return args[0] if n_out == 1 else (args[0], torch.ones_like(args[0], dtype=torch.bool))
    if op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd"):
        fns = {"ReduceMean": lambda x, ax, k: x.mean(ax, keepdim=k), "ReduceSum": lambda x, ax, k: x.sum(ax, keepdim=k),
               "ReduceMax": lambda x, ax, k: x.amax(ax, keepdim=k), "ReduceMin": lambda x, ax, k: x.amin(ax, keepdim=k),
               "ReduceL2": lambda x, ax, k: x.pow(2).sum(ax, keepdim=k).sqrt(),
               "ReduceProd": lambda x, ax, k: _prod(x, ax, k)}
        return _reduce(fns[op])(args[0], _axes({}, args, 1), a)
    if op == "Split":
        return _split(args[0], get(1) if get(1) is None or _is_shape(get(1)) else get(1).tolist(), a, n_out)
    if op == "CumSum":
        return torch.cumsum(args[0], int(_scalar(args[1])))
    if op == "Trilu":
        k = int(_scalar(get(1))) if get(1) is not None else 0
        return torch.triu(args[0], k) if a.get("upper", 1) else torch.tril(args[0], k)
    if op == "Einsum":
        return torch.einsum(a["equation"].decode() if isinstance(a["equation"], bytes) else a["equation"], *args)
    raise UnsupportedOp(f"operator {op} is not supported by the ONNX-to-torch conversion")


def _prod(x, axes, keep):
    for ax in sorted(axes, reverse=True):
        x = x.prod(ax, keepdim=keep)
    return x


def _scalar(v):
    if v is None or isinstance(v, (*INT, float)):
        return v
    if isinstance(v, list):
        return v[0]
    return v.reshape(-1)[0].item() if v.numel() else None


def _gather_nd(data, index, batch_dims):
    if batch_dims:
        raise UnsupportedOp("GatherND with batch_dims")
    depth = index.shape[-1]
    flat = index.reshape(-1, depth)
    picked = data[tuple(flat[:, i] for i in range(depth))]
    return picked.reshape(*index.shape[:-1], *data.shape[depth:])


SUPPORTED = set(OPS) | {
    "Gemm", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "LayerNormalization", "Softmax", "LogSoftmax", "Gelu", "LeakyRelu", "HardSigmoid", "Clip", "Flatten",
    "Reshape", "Transpose", "Shape", "Size", "Gather", "GatherElements", "GatherND", "Unsqueeze", "Squeeze",
    "Concat", "Slice", "Cast", "ConstantOfShape", "Expand", "Tile", "Dropout", "ReduceMean", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd", "Split", "CumSum", "Trilu", "Einsum", "Constant",
}


def unsupported(model: onnx.ModelProto) -> list[str]:
    """Operators of the graph the conversion cannot run."""
    return sorted({n.op_type for n in model.graph.node
                   if n.op_type not in SUPPORTED or n.domain not in ("", "ai.onnx")})


def _key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"


class OnnxModule(torch.nn.Module):
    """Runs `model` with torch; float initializers are parameters named after the initializers."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        missing = unsupported(model)
        if missing:
            raise UnsupportedOp(f"operators the ONNX-to-torch conversion does not support: {missing}")
        g = model.graph
        self.weights = torch.nn.ParameterDict()
        self.consts: dict[str, object] = {}
        self._names: dict[str, str] = {}  # initializer name -> parameter key
        for t in g.initializer:
            self._add_constant(t.name, numpy_helper.to_array(t))
        self.nodes = []
        self.node_names: list[str] = []
        for n in g.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant":
                self._add_constant(n.output[0], _constant_value(attrs))
                continue
            self.nodes.append((n.op_type, list(n.input), list(n.output), attrs))
            self.node_names.append(n.name)
        self.hooks: dict[int, dict[int, Callable]] = {}  # node index -> {input position: transform} (QAT)
        self.taps: set[str] = set()  # intermediate tensors a run keeps in `tapped` (layer-wise distillation)
        self.tapped: dict[str, torch.Tensor] = {}
        inits = {t.name for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        for i, (k, v) in enumerate(list(self.consts.items())):
            if isinstance(v, torch.Tensor):
                self.register_buffer(f"const_{i}", v, persistent=True)
                self.consts[k] = f"const_{i}"

    def _add_constant(self, name: str, value: np.ndarray) -> None:
        if value.dtype.kind == "f" and value.ndim >= 1:
            key = _key(name)
            while key in self.weights:
                key += "_"
            self.weights[key] = torch.nn.Parameter(torch.from_numpy(value.copy()))
            self._names[name] = key
        elif value.dtype.kind in "iu" and value.size <= SMALL_INT and value.ndim <= 1:
            self.consts[name] = int(value) if value.ndim == 0 else [int(v) for v in value]
        else:
            self.consts[name] = torch.from_numpy(np.array(value, copy=True))

    def parameter_for(self, initializer: str) -> torch.nn.Parameter | None:
        key = self._names.get(initializer)
        return self.weights[key] if key is not None else None

    def forward(self, *inputs):
        return self.run(*inputs)

    def run(self, *inputs):
        env: dict[str, object] = dict(zip(self.input_names, inputs, strict=True))
        for name, key in self._names.items():
            env[name] = self.weights[key]
        for name, v in self.consts.items():
            env[name] = getattr(self, v) if isinstance(v, str) else v
        for index, (op, ins, outs, attrs) in enumerate(self.nodes):
            args = [env[i] if i else None for i in ins]
            for position, transform in self.hooks.get(index, {}).items():
                args[position] = transform(args[position])
            result = _run_node(op, args, attrs, len(outs))
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for o, r in zip(outs, result, strict=False):
                    env[o] = r
        self.tapped = {name: env[name] for name in self.taps if name in env}
        results = tuple(_t(env[o]) for o in self.output_names)
        return results[0] if len(results) == 1 else results

    def to_onnx(self, template: onnx.ModelProto) -> onnx.ModelProto:
        """`template` (the model this module was made from) with the module's current weights."""
        model = onnx.ModelProto()
        model.CopyFrom(template)
        for t in model.graph.initializer:
            p = self.parameter_for(t.name)
            if p is not None:
                t.CopyFrom(numpy_helper.from_array(p.detach().cpu().numpy().astype(
                    numpy_helper.to_array(t).dtype), t.name))
        return model


def named(module: OnnxModule) -> torch.nn.Module:
    """The module with a forward whose parameters carry the ONNX input names (for a readable .pt2)."""
    names = [_key(n) if _key(n).isidentifier() else f"input_{i}" for i, n in enumerate(module.input_names)]
    namespace: dict = {}
    exec(f"def forward(self, {', '.join(names)}):\n    return self.inner.run({', '.join(names)})", namespace)  # noqa: S102
    cls = type("ExportedModel", (torch.nn.Module,), {"forward": namespace["forward"]})
    wrapper = cls()
    wrapper.inner = module
    return wrapper


def _constant_value(attrs: dict) -> np.ndarray:
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(list(attrs[key]), dtype)
    raise UnsupportedOp(f"Constant with attributes {sorted(attrs)}")
