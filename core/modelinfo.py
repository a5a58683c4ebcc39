"""What the gateway and the workers both read off an ONNX graph: its operators and its repeated layers.

Layers are found two ways:
- by name: nodes named like `.../layer.3/...`, `layers.3`, `blocks.3`, `h.3` (what exporters write
  for transformer encoders and other ModuleLists), grouped by index;
- by shape: in a sequential stack, a weight layer (plus its bias and activation) whose output has the
  same width as its input, so that removing it leaves a valid graph.
A layer can be dropped when it has one stream input and one output: its input then flows straight on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

LAYER_NAME = re.compile(r"^(.*?(?:^|[/._])(?:layer|layers|blocks|block|h))[/._](\d+)(?=[/._]|$)")
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
ACTIVATIONS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Elu", "Selu", "HardSigmoid", "HardSwish",
               "Softplus", "Mish", "Identity", "Dropout", "BatchNormalization"}


@dataclass
class Layer:
    index: int
    name: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    input: str | None = None  # the stream entering the layer
    output: str | None = None  # the stream leaving it
    kind: str = "named"  # "named" (transformer layers) or "block" (same-width block of a stack)

    @property
    def droppable(self) -> bool:
        return self.input is not None and self.output is not None


def operators(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in model.graph.node})


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    return _named_layers(model) or _sequential_blocks(model)


def _named_layers(model: onnx.ModelProto) -> list[Layer]:
    groups: dict[str, dict[int, list[onnx.NodeProto]]] = {}
    for n in model.graph.node:
        m = LAYER_NAME.match(n.name or "")
        if m:
            groups.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(n)
    groups = {p: g for p, g in groups.items() if len(g) >= 2}
    if not groups:
        return []
    prefix = max(groups, key=lambda p: sum(len(v) for v in groups[p].values()))
    layers = [Layer(i, f"{prefix}.{i}", nodes) for i, nodes in sorted(groups[prefix].items())]
    _wire(model, layers)
    return layers


def _wire(model: onnx.ModelProto, layers: list[Layer]) -> None:
    """Finds each layer's stream input and output. Inputs every layer reads (masks, position tables) are
    context, not the stream."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    consumers: dict[str, set[int]] = {}
    for layer in layers:
        for n in layer.nodes:
            for i in n.input:
                consumers.setdefault(i, set()).add(layer.index)
    readers_outside: dict[str, int] = {}
    owner = {id(n): layer.index for layer in layers for n in layer.nodes}
    for n in model.graph.node:
        for i in n.input:
            if id(n) not in owner:
                readers_outside[i] = readers_outside.get(i, 0) + 1
    graph_outputs = {o.name for o in model.graph.output}
    kinds = _tensor_kinds(model)
    for layer in layers:
        produced = {o for n in layer.nodes for o in n.output}
        inputs = {i for n in layer.nodes for i in n.input if i and i not in produced and i not in constants}
        stream_in = [i for i in inputs if len(consumers.get(i, ())) == 1]
        outputs = [o for o in produced if o in graph_outputs or readers_outside.get(o)
                   or (consumers.get(o, set()) - {layer.index})]
        # the stream is the float activation going in and out; other outputs (masks, shapes an exporter
        # computed once and shares) stay computed when the layer goes
        pairs = {(i, o) for i in stream_in for o in outputs
                 if kinds.get(i) and kinds.get(i) == kinds.get(o) and kinds[i][0] in FLOATS and kinds[i][1] >= 2}
        if not kinds and len(stream_in) == 1 and len(outputs) == 1:
            pairs = {(stream_in[0], outputs[0])}
        if len(pairs) == 1:
            layer.input, layer.output = next(iter(pairs))


def _tensor_kinds(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """(element type, rank) of every tensor shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    g = inferred.graph
    return {v.name: (v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
            for v in [*g.input, *g.value_info, *g.output] if v.type.tensor_type.HasField("shape")}


def _sequential_blocks(model: onnx.ModelProto) -> list[Layer]:
    """Same-width weight layers of a stack: Gemm / MatMul / Conv (+ bias, + activation) with square weights."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    blocks = []
    for n in g.node:
        if n.op_type not in ("Gemm", "MatMul", "Conv") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if w.ndim < 2 or w.shape[0] != w.shape[1] or _strided(n):
            continue
        nodes, out = [n], n.output[0]
        while len(consumers.get(out, [])) == 1:
            nxt = consumers[out][0]
            is_bias = nxt.op_type == "Add" and any(i in inits for i in nxt.input)
            if not (is_bias or nxt.op_type in ACTIVATIONS):
                break
            nodes.append(nxt)
            out = nxt.output[0]
        if any(x.op_type in ACTIVATIONS for x in nodes):  # a projection without activation is not a stack block
            blocks.append(Layer(len(blocks), n.name or n.output[0], nodes, n.input[0], out, "block"))
    return blocks


def _strided(node: onnx.NodeProto) -> bool:
    for a in node.attribute:
        if a.name == "strides" and any(s != 1 for s in a.ints):
            return True
        if a.name == "group" and a.i != 1:
            return True
    if node.op_type == "Conv":  # a convolution keeps its spatial size only with 'same' padding
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0] * 2 * len(kernel))
        auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
        if auto not in (b"SAME_UPPER", b"SAME_LOWER") and any(
                pads[i] + pads[i + len(kernel)] != k - 1 for i, k in enumerate(kernel)):
            return True
    return False


# operators that pass an integer tensor's values on unchanged (only its shape or type changes)
VALUE_PRESERVING = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Transpose", "Expand"}


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    found = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None:
                found[n.output[0]] = value
    return found


def _constant_behind(name: str, constants: dict, producers: dict) -> onnx.TensorProto | None:
    """The constant a tensor is made of through value-preserving operators (a range broadcast to a shape)."""
    for _ in range(8):
        if name in constants:
            return constants[name]
        node = producers.get(name)
        if node is None or node.op_type not in VALUE_PRESERVING:
            return None
        name = node.input[0]
    return None


def _range_of(n: onnx.NodeProto, tensor: str, constants: dict, producers: dict) -> list[int] | None | bool:
    """[low, high) the node lets `tensor` take: a Gather's table rows, a OneHot's depth, the values an Equal
    compares it with (a one-hot written as Equal against a range, as jax2tf and tf2onnx export it); False when
    the node says nothing of it."""
    if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == tensor:
        table = _constant_behind(n.input[0], constants, producers)
        axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
        return [0, table.dims[0]] if table is not None and table.dims and axis == 0 else None
    if n.op_type == "OneHot" and n.input[0] == tensor:
        depth = _constant_behind(n.input[1], constants, producers)
        return [0, int(numpy_helper.to_array(depth).reshape(-1)[0])] if depth is not None else None
    if n.op_type == "Equal":
        other = n.input[1] if n.input[0] == tensor else n.input[0]
        values = _constant_behind(other, constants, producers)
        if values is None or not np.issubdtype(numpy_helper.to_array(values).dtype, np.integer):
            return None
        array = numpy_helper.to_array(values)
        return [int(array.min()), int(array.max()) + 1] if array.size > 1 else None
    return False


def integer_ranges(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """[low, high) for each named input whose values the graph bounds (through casts and reshapes): token ids
    into an embedding, bytes into a byte table or a one-hot. Any value outside would make the model fail or
    read garbage, so generated inputs keep to it."""
    constants = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = {}
    for name in names:
        ranges, todo, seen = [], [name], set()
        while todo:
            tensor = todo.pop()
            seen.add(tensor)
            for n in consumers.get(tensor, []):
                if n.op_type in VALUE_PRESERVING and n.input[0] == tensor:
                    todo += [o for o in n.output if o not in seen]
                elif (bound := _range_of(n, tensor, constants, producers)) is not False:
                    ranges.append(bound)
        if ranges and None not in ranges:
            found[name] = [max(r[0] for r in ranges), min(r[1] for r in ranges)]
    return found
