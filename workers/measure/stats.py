"""What can be counted from the file itself: size, compressed size, parameters, MACs."""

from __future__ import annotations

import functools
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Inputs of quantized operators that are scales or zero points, not weights: (op_type -> input indexes).
_AUX_INPUTS = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "MatMulInteger": {2, 3},
    "ConvInteger": {2, 3},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "DynamicQuantizeMatMul": {2, 3, 4},
    "MatMulNBits": {2, 3, 4, 5},
}
_INDEX_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
_INT32_BIAS = {"QLinearConv": 8, "QGemm": 6}  # QOperator's biases: int32, weights all the same


def gzip_size(path: Path) -> int:
    compressor, size = zlib.compressobj(6, zlib.DEFLATED, 31), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            size += len(compressor.compress(chunk))
    return size + len(compressor.flush())


def _weights(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, int]]:
    """(tensor, logical element count) for every weight: initializers and Constant tensors, minus
    quantization scales / zero points and integer index tensors (shapes, axes)."""
    aux = set()
    packed: dict[str, int] = {}
    biases = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}  # QDQ int32 biases
    biases |= {n.input[_INT32_BIAS[n.op_type]] for n in model.graph.node
               if n.op_type in _INT32_BIAS and len(n.input) > _INT32_BIAS[n.op_type]}
    dynamic_scales = {n.output[1] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"}
    inits = {t.name for t in model.graph.initializer}
    cast_consts = {n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in inits}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and node.input[1] in inits | cast_consts:
            aux.add(node.input[0])  # a clustered layer's codebook: its codes are the weights
        if node.op_type == "Mul" and dynamic_scales.intersection(node.input):
            aux.update(node.input)  # activation scale x weight scale, after MatMulInteger
        for i in _AUX_INPUTS.get(node.op_type, ()):
            if i < len(node.input):
                aux.add(node.input[i])
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: a.i for a in node.attribute}
            packed[node.input[1]] = attrs.get("K", 0) * attrs.get("N", 0)
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    out = []
    for t in tensors:
        if t.name in aux or (t.data_type in _INDEX_TYPES and t.name not in biases):
            continue
        count = packed.get(t.name) or (int(np.prod(t.dims)) if t.dims else 1)
        out.append((t, count))
    return out


def count_params(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, nonzero parameters)."""
    total = nonzero = 0
    for tensor, count in _weights(model):
        total += count
        values = numpy_helper.to_array(tensor)
        nonzero += count if values.size != count else int(np.count_nonzero(values))
    return total, nonzero


def _static_copy(model: onnx.ModelProto, dims: dict[str, list[int]]) -> onnx.ModelProto:
    """The model with every input dimension fixed (batch 1), so shapes can be inferred."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]  # recorded types without shapes would block inference
    init = {i.name for i in copy.graph.initializer}
    for value in copy.graph.input:
        if value.name in init:
            continue
        shape = dims.get(value.name)
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                d.dim_value = 1 if i == 0 else (shape[i] if shape and i < len(shape) else 16)
    return copy


@functools.cache
def _symbolic():
    """onnxruntime's SymbolicShapeInference, loaded from its own file: importing it as
    onnxruntime.tools.symbolic_shape_infer runs the package's __init__, which imports torch when it is
    installed (2 s in a fresh process), and the module needs none of it. Loaded when this module is imported,
    so that the measuring processes' zygote (core/sandbox.py) has it, sympy included, before it forks."""
    import onnxruntime

    path = Path(onnxruntime.__file__).parent / "tools" / "symbolic_shape_infer.py"
    spec = importlib.util.spec_from_file_location("pareto_symbolic_shape_infer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SymbolicShapeInference


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """Shapes of every tensor: onnxruntime's symbolic inference knows its own operators (MatMulNBits,
    fused ops) and mixed-precision graphs; onnx's is the fallback."""
    try:
        return _symbolic().infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception:
        try:
            return shape_inference.infer_shapes(model, data_prop=True)
        except Exception:
            return None


WEIGHT_OPS = ("Conv", "MatMul", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")
MEASURED_MAX_NODES = 20_000  # running the graph with every tensor an output costs memory: only for graphs below


def tensor_shapes(model: onnx.ModelProto, dims: dict[str, list[int]]) -> dict[str, list[int]]:
    """The shape of every tensor for one sample (batch 1): inferred (onnxruntime's symbolic inference, then
    onnx's), and where that left a weight layer's output unknown, measured by running the graph once on zeros
    with every tensor an output. {} when all of that fails."""
    static = _static_copy(model, dims)
    inferred = _inferred(static)
    shapes: dict[str, list[int]] = {}
    if inferred is not None:
        g = inferred.graph
        # a dimension inference could not pin (data-dependent) is the batch of 1 we fixed, or close enough
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
                  for v in [*g.input, *g.value_info, *g.output]}
        shapes.update({t.name: list(t.dims) for t in g.initializer})
    if any(n.op_type in WEIGHT_OPS and n.output[0] not in shapes for n in model.graph.node):
        shapes = {**_measured(static), **shapes}
    return shapes


def _measured(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape from one run on zeros (inputs already fixed by _static_copy); {} if it cannot run."""
    import onnxruntime as ort

    if len(model.graph.node) > MEASURED_MAX_NODES:
        return {}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    known = {o.name for o in copy.graph.output}
    names = [o for n in copy.graph.node for o in n.output if o and o not in known]
    copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    init = {i.name for i in copy.graph.initializer}
    feed = {}
    for value in copy.graph.input:
        if value.name in init:
            continue
        t = value.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        feed[value.name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 4
        session = ort.InferenceSession(copy.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feed)
    except Exception:
        return {}
    return {o.name: list(np.shape(v)) for o, v in zip(session.get_outputs(), outputs, strict=True)}


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


def count_macs(model: onnx.ModelProto, dims: dict[str, list[int]]) -> int | None:
    """Multiply-accumulates of one sample through MatMul / Gemm / Conv (and their quantized forms)."""
    shapes = tensor_shapes(model, dims)
    if not shapes:
        return None
    g = model.graph
    total = 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        if node.op_type == "QGemm":  # onnxruntime's shape inference makes its output [1, 1]: from the weights
            a, b = shapes.get(node.input[0]), shapes.get(node.input[3])
            if b:
                n, k = (b[0], b[1]) if _attr(node, "transB") else (b[1], b[0])
                rows = a[0] if a and len(a) == 2 and a[1] == k and not _attr(node, "transA") else 1  # 1 sample
                total += rows * k * n
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm", "QLinearMatMul", "FusedMatMul", "FusedGemm"):
            a = shapes.get(node.input[0])
            if not a:
                continue
            k = a[-2] if _attr(node, "transA") else a[-1]
            total += int(np.prod(out)) * k
        elif node.op_type in ("Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"):
            w = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
            if w:
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "MatMulNBits":
            total += int(np.prod(out)) * _attr(node, "K")
    return total


def static_metrics(path: Path, dims: dict[str, list[int]]) -> dict:
    model = onnx.load(str(path))
    params, nonzero = count_params(model)
    return {
        "size_bytes": path.stat().st_size,
        "size_gzip_bytes": gzip_size(path),
        "params": params,
        "nonzero_params": nonzero,
        "macs": count_macs(model, dims),
    }


_symbolic()
