"""Channel groups: the output channels of a weight layer, followed to every tensor that carries them and
every weight that reads them, so that channels can be removed (pruning) or added (growth) without
breaking the graph.

From a producer (Gemm / MatMul / Conv, plus its bias) the channels flow through channel-wise operators
(activations, pooling, batch norm, elementwise ops with scalars or per-channel constants, depthwise
convolutions, and ops combining two tensors of the same group, as GELU does) until they reach the
weights of the next layers (their input axis), possibly through a Flatten (each channel then spans
H x W inputs). Anything else on the way (a residual Add with another tensor, Concat, a normalisation over
channels, a graph output) makes the group unsafe to change, and it is left alone.

Attention heads form their own groups: the Q, K and V projections and the output projection, a head being
a block of head_dim channels (found by following Reshape [..., -1 or H, head_dim] around a Softmax).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from workers.graph.onnx_graph import Graph, WeightOp

UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Gelu", "FastGelu", "Elu", "Selu", "HardSigmoid",
         "HardSwish", "Softplus", "Softsign", "Mish", "Identity", "Dropout", "Neg", "Abs", "Exp", "Sqrt",
         "Cast", "Celu", "ThresholdedRelu"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}


@dataclass
class ChannelGroup:
    producers: list[WeightOp]
    size: int  # channels
    unit: int = 1  # channels removed together (head_dim for attention heads)
    consumers: list[tuple[WeightOp, int]] = field(default_factory=list)  # (op, inputs per channel)
    per_channel: list[tuple[str, int]] = field(default_factory=list)  # (constant, axis) sliced alike
    grouped_convs: list[onnx.NodeProto] = field(default_factory=list)  # depthwise: `group` follows C
    head_reshapes: list[tuple[str, int]] = field(default_factory=list)  # (shape constant, index of H)
    kind: str = "channels"

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.producers)

    def importance(self, graph: Graph) -> np.ndarray:
        """L2 norm per unit of every weight that writes or reads the channels."""
        score = np.zeros(self.size)
        for op in self.producers:
            w = np.moveaxis(graph.array(op.weight), op.out_axis, 0).reshape(self.size, -1)
            score += (w.astype(np.float64) ** 2).sum(1)
        for op, repeat in self.consumers:
            w = np.moveaxis(graph.array(op.weight), op.in_axis, 0)
            w = w.reshape(self.size, repeat, -1)
            score += (w.astype(np.float64) ** 2).sum((1, 2))
        return np.sqrt(score.reshape(-1, self.unit).sum(1))


def channel_groups(graph: Graph, shapes: dict[str, list[int]]) -> list[ChannelGroup]:
    """Every group that can safely be resized. `shapes` maps tensors to inferred shapes (batch 1)."""
    ops = {id(op.node): op for op in graph.weight_ops()}
    groups = []
    for op in ops.values():
        size = graph.array(op.weight).shape[op.out_axis]
        group = ChannelGroup([op], size)
        if op.bias:
            group.per_channel.append((op.bias, 0))
        axis = 1 if op.kind == "conv" else -1
        if _follow(graph, ops, shapes, group, op.output, axis):
            groups.append(group)
    return groups + attention_heads(graph, ops)


def _closure(graph: Graph, start: str, ops: dict) -> set[str]:
    """Tensors reachable from `start` through non-weight nodes (bounded), to tell same-group operands."""
    seen, stack = {start}, [start]
    while stack and len(seen) < 200:
        for n in graph.consumers.get(stack.pop(), []):
            if id(n) in ops or n.op_type not in UNARY | BINARY | POOLS | {"BatchNormalization"}:
                continue
            for o in n.output:
                if o not in seen:
                    seen.add(o)
                    stack.append(o)
    return seen


def _follow(graph: Graph, ops: dict, shapes: dict, group: ChannelGroup, start: str, axis: int) -> bool:
    same = _closure(graph, start, ops)
    stack, done, repeat_of = [start], set(), {start: 1}
    while stack:
        tensor = stack.pop()
        if tensor in done:
            continue
        done.add(tensor)
        if tensor in graph.outputs or not graph.consumers.get(tensor):
            return False
        for n in graph.consumers[tensor]:
            repeat = repeat_of[tensor]
            nxt = _step(graph, ops, shapes, group, n, tensor, axis, same, repeat)
            if nxt is None:
                return False
            for out, r in nxt:
                repeat_of[out] = r
                stack.append(out)
    return bool(group.consumers)


def _step(graph, ops, shapes, group, n, tensor, axis, same, repeat):
    """Where the channels go through node `n` (which reads `tensor`): [(tensor, repeat)], [] at a consumer
    weight, None when the group cannot be changed safely."""
    op = ops.get(id(n))
    if op is not None:
        if n.input[0] != tensor or (repeat > 1 and op.kind != "linear"):
            return None
        group.consumers.append((op, repeat))
        return []
    if repeat > 1:  # after Flatten only weights may read the channels
        return None
    t = n.op_type
    if t in UNARY or (t in POOLS and axis == 1):
        return [(n.output[0], 1)]
    if t == "BatchNormalization" and axis == 1:
        group.per_channel += [(i, 0) for i in n.input[1:5]]
        return [(n.output[0], 1)]
    if t == "PRelu" and graph.is_const(n.input[1]):
        return _per_channel(graph, group, n, n.input[1], axis)
    if t in BINARY:
        other = n.input[1] if n.input[0] == tensor else n.input[0]
        if other in same and other != tensor:
            return [(n.output[0], 1)]
        if graph.is_const(other):
            return _per_channel(graph, group, n, other, axis)
        return None
    if t == "Conv" and _depthwise(graph, n, group.size):
        group.per_channel.append((n.input[1], 0))
        if len(n.input) > 2 and n.input[2]:
            group.per_channel.append((n.input[2], 0))
        group.grouped_convs.append(n)
        return [(n.output[0], 1)]
    if t == "Flatten" and axis == 1:
        before, after = shapes.get(tensor), shapes.get(n.output[0])
        if before and after and len(after) == 2 and after[1] == group.size * int(np.prod(before[2:])):
            return [(n.output[0], int(np.prod(before[2:])))]
    return None


def _per_channel(graph: Graph, group: ChannelGroup, n, const: str, axis: int):
    value = graph.array(const)
    if value.size == 1:
        return [(n.output[0], 1)]
    shape = list(value.shape)
    if axis == -1 and shape and shape[-1] == group.size and value.size == group.size:
        group.per_channel.append((const, len(shape) - 1))
        return [(n.output[0], 1)]
    if axis == 1 and value.size == group.size and len(shape) >= 3 and shape[-3] == group.size:
        group.per_channel.append((const, len(shape) - 3))
        return [(n.output[0], 1)]
    return None


def _depthwise(graph: Graph, n, channels: int) -> bool:
    g = next((a.i for a in n.attribute if a.name == "group"), 1)
    w = graph.array(n.input[1]) if graph.is_const(n.input[1]) else None
    return g == channels and w is not None and w.shape[0] == channels and w.shape[1] == 1


# -- attention heads --------------------------------------------------------------------------------------
PASS_BACK = {"Transpose", "Mul", "Div", "Reshape", "Cast"}


def attention_heads(graph: Graph, ops: dict) -> list[ChannelGroup]:
    by_output = {op.output: op for op in ops.values()}
    groups = []
    for softmax in [n for n in graph.g.node if n.op_type == "Softmax"]:
        group = _heads_around(graph, by_output, softmax)
        if group is not None:
            groups.append(group)
    return groups


def _back_to_projection(graph: Graph, by_output: dict, tensor: str, reshapes: list):
    """Walks back from an attention operand to the projection that made it, noting the head split."""
    for _ in range(8):
        if tensor in by_output:
            return by_output[tensor]
        node = graph.producer.get(tensor)
        if node is None or node.op_type not in PASS_BACK:
            return None
        if node.op_type == "Reshape":
            reshapes.append(node)
        if node.op_type in ("Mul", "Div") and not graph.is_const(node.input[1]):
            return None
        tensor = node.input[0]
    return None


def _head_split(graph: Graph, reshape, channels: int) -> tuple[int, tuple[str, int] | None] | None:
    """(head_dim, shape constant to edit or None when the head count is -1) of a [..., H, head_dim] Reshape."""
    shape_src = reshape.input[1]
    if graph.is_const(shape_src):
        shape = graph.array(shape_src)
        if len(shape) < 2 or shape[-1] <= 0 or channels % shape[-1]:
            return None
        return int(shape[-1]), (None if shape[-2] == -1 else (shape_src, len(shape) - 2))
    concat = graph.producer.get(shape_src)
    if concat is None or concat.op_type != "Concat" or len(concat.input) < 2:
        return None
    last, heads = graph.array(concat.input[-1]), graph.array(concat.input[-2])
    if last is None or heads is None or last.size != 1 or heads.size != 1 or channels % int(last.item()):
        return None
    return int(last.item()), (None if int(heads.item()) == -1 else (concat.input[-2], 0))


def _heads_around(graph: Graph, by_output: dict, softmax) -> ChannelGroup | None:
    scores = graph.producer.get(softmax.input[0])
    while scores is not None and scores.op_type in ("Add", "Where", "Mul", "Div", "Cast"):
        scores = next((graph.producer.get(i) for i in scores.input if graph.producer.get(i) is not None
                       and not graph.is_const(i) and graph.producer[i].op_type not in ("Where", "Cast", "Expand")),
                      None)
    if scores is None or scores.op_type != "MatMul":
        return None
    reshapes: list = []
    q = _back_to_projection(graph, by_output, scores.input[0], reshapes)
    k = _back_to_projection(graph, by_output, scores.input[1], reshapes)
    mix = _forward_through(graph, softmax.output[0], {"Where", "Cast", "Dropout", "IsNaN"}, "MatMul")
    if q is None or k is None or mix is None:
        return None
    v = _back_to_projection(graph, by_output, mix.input[1], reshapes)
    out_op = _to_output_projection(graph, mix.output[0], reshapes)
    if v is None or out_op is None or len({id(q.node), id(k.node), id(v.node)}) != 3:
        return None
    channels = graph.array(q.weight).shape[q.out_axis]
    splits = [_head_split(graph, r, channels) for r in reshapes[:3]]
    if len(reshapes) < 3 or any(s is None for s in splits) or len({s[0] for s in splits}) != 1:
        return None
    heads = channels // splits[0][0]
    if any(not _inferred_heads(graph, r, heads) for r in reshapes[3:]):  # the merge back to channels
        return None
    head_dim = splits[0][0]
    group = ChannelGroup([q, k, v], channels, unit=head_dim, consumers=[(out_op, 1)], kind="heads",
                         head_reshapes=[s[1] for s in splits if s[1] is not None])
    group.per_channel = [(p.bias, 0) for p in (q, k, v) if p.bias]
    return group


def _forward_through(graph: Graph, tensor: str, passing: set[str], wanted: str):
    for _ in range(6):
        users = graph.consumers.get(tensor, [])
        if not users:
            return None
        target = next((u for u in users if u.op_type == wanted), None)
        if target is not None:
            return target
        nxt = next((u for u in users if u.op_type in passing and u.op_type != "IsNaN"), None)
        if nxt is None:
            return None
        tensor = nxt.output[0]
    return None


def _to_output_projection(graph: Graph, tensor: str, reshapes: list) -> WeightOp | None:
    """Follows the attention output through Transpose / Reshape to the projection reading it; the
    reshapes met on the way are appended to `reshapes`."""
    for _ in range(6):
        users = [u for u in graph.consumers.get(tensor, []) if u.op_type != "Shape"]
        if len(users) != 1:
            return None
        op = graph._weight_op(users[0])
        if op is not None:
            return op if users[0].input[0] == tensor else None
        if users[0].op_type not in ("Transpose", "Reshape"):
            return None
        if users[0].op_type == "Reshape":
            reshapes.append(users[0])
        tensor = users[0].output[0]
    return None


def _inferred_heads(graph: Graph, reshape, heads: int) -> bool:
    """A reshape around the attention output is safe when the head count in it is inferred (-1)."""
    src = graph.producer.get(reshape.input[1])
    if graph.is_const(reshape.input[1]):
        values = list(graph.array(reshape.input[1]).ravel())
    elif src is not None and src.op_type == "Concat":
        values = [int(graph.array(i).ravel()[0]) for i in src.input if graph.is_const(i)]
    else:
        return False
    return -1 in values and heads not in values


# -- applying a choice --------------------------------------------------------------------------------------
def resize(graph: Graph, group: ChannelGroup, index: np.ndarray, consumer_scale: np.ndarray | None = None) -> None:
    """Rebuilds every tensor of the group with channels `index` (a subset to prune, repeats to grow);
    `consumer_scale` multiplies what each new channel contributes to the next layers (growth splits it)."""
    for op in group.producers:
        graph.set_array(op.weight, np.take(graph.array(op.weight), index, axis=op.out_axis))
    for name, axis in group.per_channel:
        graph.set_array(name, np.take(graph.array(name), index, axis=axis))
    for op, repeat in group.consumers:
        spread = (index[:, None] * repeat + np.arange(repeat)[None, :]).reshape(-1)
        w = np.take(graph.array(op.weight), spread, axis=op.in_axis)
        if consumer_scale is not None:
            shape = [1] * w.ndim
            shape[op.in_axis] = len(spread)
            w = w * np.repeat(consumer_scale, repeat).reshape(shape).astype(w.dtype)
        graph.set_array(op.weight, w)
    for conv in group.grouped_convs:
        for a in conv.attribute:
            if a.name == "group":
                a.i = len(index)
    for const, position in group.head_reshapes:
        shape = graph.array(const).copy()
        shape.reshape(-1)[position] = len(index) // group.unit
        graph.set_array(const, shape)


def units_to_channels(units: np.ndarray, unit: int) -> np.ndarray:
    return (units[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)
