"""grow: more capacity, same function. Wider: channels copied (Net2WiderNet), the outgoing weights of a
channel split among its copies in random positive shares, so the next layer receives exactly what it did.
Deeper: identity layers after ReLU blocks (Net2DeeperNet; ReLU of a non-negative input is the input).
Transformer encoders: layers duplicated (not function-preserving; training follows)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from core.errors import ErrorCode, InvalidRecipe
from core.modelinfo import find_layers
from core.steps.grow import Grow
from workers.graph.channels import channel_groups, resize
from workers.graph.onnx_graph import Graph, WeightOp, classifier_ops
from workers.measure.stats import tensor_shapes
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext


def widen(graph: Graph, p: Grow, ctx: StepContext, rng: np.random.Generator) -> int:
    shapes = tensor_shapes(graph.model, ctx.samples.sample_shapes())
    grown = 0
    for group in [g for g in channel_groups(graph, shapes) if g.kind == "channels"]:
        size = group.size
        extra = int(round(size * p.width_multiplier)) - size
        if extra <= 0:
            continue
        index = np.concatenate([np.arange(size), rng.choice(size, extra)])
        shares = np.empty(len(index))
        for channel in range(size):  # the copies of a channel share its outgoing weights
            copies = np.flatnonzero(index == channel)
            shares[copies] = rng.dirichlet(np.ones(len(copies))) if len(copies) > 1 else 1.0
        resize(graph, group, index, consumer_scale=shares)
        grown += 1
    return grown


def _relu_blocks(graph: Graph) -> list[tuple[WeightOp, str]]:
    """(weight op, its post-ReLU output) for every hidden layer followed by a ReLU."""
    ops = graph.weight_ops()
    kept = classifier_ops(graph, ops)
    blocks = []
    for op in ops:
        user = graph.only_consumer(op.output)
        if op.name not in kept and user is not None and user.op_type == "Relu":
            blocks.append((op, user.output[0]))
    return blocks


def _identity_layer(graph: Graph, op: WeightOp, tensor: str, k: int) -> list:
    channels = graph.array(op.weight).shape[op.out_axis]
    name = f"{op.name}/grown_{k}"
    out = graph.unique(f"{tensor}_grown_{k}")
    pre = graph.unique(f"{tensor}_grown_{k}_pre")
    if op.kind == "conv":
        w = np.zeros((channels, channels, 3, 3), np.float32)
        w[np.arange(channels), np.arange(channels), 1, 1] = 1.0
        weight = graph.add_initializer(f"{name}.weight", w)
        bias = graph.add_initializer(f"{name}.bias", np.zeros(channels, np.float32))
        layer = helper.make_node("Conv", [tensor, weight, bias], [pre], name=f"{name}/Conv", pads=[1, 1, 1, 1],
                                 kernel_shape=[3, 3])
        nodes = [layer]
    else:
        weight = graph.add_initializer(f"{name}.weight", np.eye(channels, dtype=np.float32))
        bias = graph.add_initializer(f"{name}.bias", np.zeros(channels, np.float32))
        mid = graph.unique(f"{tensor}_grown_{k}_mm")
        nodes = [helper.make_node("MatMul", [tensor, weight], [mid], name=f"{name}/MatMul"),
                 helper.make_node("Add", [mid, bias], [pre], name=f"{name}/Add")]
    return [*nodes, helper.make_node("Relu", [pre], [out], name=f"{name}/Relu")]


def deepen_stack(graph: Graph, count: int) -> int:
    blocks = _relu_blocks(graph)
    if not blocks:
        return 0
    for k in range(count):
        op, tensor = blocks[k % len(blocks)]
        readers = list(graph.consumers.get(tensor, []))
        nodes = _identity_layer(graph, op, tensor, k)
        for reader in readers:  # the new layer sits between the block and what read it
            for i, name in enumerate(reader.input):
                if name == tensor:
                    reader.input[i] = nodes[-1].output[0]
        first_reader = min(list(graph.g.node).index(r) for r in readers) if readers else len(graph.g.node)
        for offset, node in enumerate(nodes):
            graph.g.node.insert(first_reader + offset, node)
        graph.reindex()
        blocks = [(o, nodes[-1].output[0] if t == tensor else t) for o, t in blocks]
    return count


def duplicate_layers(graph: Graph, count: int) -> int:
    layers = [layer for layer in find_layers(graph.model) if layer.kind == "named" and layer.droppable]
    if not layers:
        return 0
    chosen = sorted({layers[int(i)].index for i in np.linspace(0, len(layers) - 1, count)}, reverse=True)
    by_index = {layer.index: layer for layer in layers}
    for i in chosen:
        _copy_layer(graph, by_index[i], f"dup{i}")
    return len(chosen)


def _copy_layer(graph: Graph, layer, tag: str) -> None:
    produced = {o for n in layer.nodes for o in n.output}
    rename = {o: f"{o}__{tag}" for o in produced}
    rename[layer.input] = layer.output  # the copy reads what the original layer wrote
    weights = {}
    for n in layer.nodes:
        for name in n.input:
            if name in graph.inits and graph.array(name).dtype.kind == "f" and graph.array(name).ndim >= 1:
                weights.setdefault(name, graph.add_initializer(f"{name}__{tag}", graph.array(name)))
    copies = []
    for n in layer.nodes:
        c = helper.make_node(n.op_type, [rename.get(i, weights.get(i, i)) for i in n.input],
                             [rename[o] for o in n.output], name=f"{n.name}__{tag}", domain=n.domain)
        c.attribute.extend(n.attribute)
        copies.append(c)
    readers = [r for r in graph.consumers.get(layer.output, []) if r not in layer.nodes]
    for reader in readers:
        for k, name in enumerate(reader.input):
            if name == layer.output:
                reader.input[k] = rename[layer.output]
    out_is_graph_output = layer.output in graph.outputs
    position = max(list(graph.g.node).index(n) for n in layer.nodes) + 1
    for offset, node in enumerate(copies):
        graph.g.node.insert(position + offset, node)
    if out_is_graph_output:
        for o in graph.g.output:
            if o.name == layer.output:
                o.name = rename[layer.output]
    graph.reindex()


@implements(Grow)
def grow(handle: ModelHandle, p: Grow, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    rng = np.random.default_rng(ctx.seed if p.seed is None else p.seed)
    changes: list[tuple[int, str]] = []
    if p.width_multiplier > 1:
        widened = widen(graph, p, ctx, rng)
        changes.append((widened, f"widened {widened} layers x{p.width_multiplier}"))
    if p.depth_multiplier > 1:
        named = [layer for layer in find_layers(graph.model) if layer.kind == "named"]
        if named:
            added = duplicate_layers(graph, int(round(len(named) * (p.depth_multiplier - 1))))
            changes.append((added, f"duplicated {added} of {len(named)} transformer layers"))
        else:
            added = deepen_stack(graph, int(round(len(_relu_blocks(graph)) * (p.depth_multiplier - 1))))
            changes.append((added, f"added {added} identity layers"))
    if not any(count for count, _ in changes):
        raise InvalidRecipe("grow found no layer it can widen or deepen in this model",
                            code=ErrorCode.step_not_applicable)
    notes = [message for _, message in changes]
    ctx.notes.append("grow " + "; ".join(notes))
    return ModelHandle(graph.save(ctx.path("grown.onnx")))
