"""drop_layers: remove whole layers; what entered a dropped layer flows on to what read its output."""

from __future__ import annotations

from onnx import helper

from core.errors import ErrorCode, InvalidRecipe
from core.modelinfo import find_layers
from core.steps.drop_layers import DropLayers
from workers.graph.onnx_graph import Graph
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext


def chosen(count: int, p: DropLayers) -> list[int]:
    if p.drop is not None:
        return sorted(set(p.drop))
    return [i for i in range(count) if (count - 1 - i) % p.keep_every]


@implements(DropLayers)
def drop_layers(handle: ModelHandle, p: DropLayers, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    layers = find_layers(graph.model)
    drop = chosen(len(layers), p)
    every = layers and layers[0].kind == "named" and len(drop) >= len(layers)  # an encoder keeps one layer
    if not layers or not drop or every or max(drop) >= len(layers):
        raise InvalidRecipe(f"drop_layers: the model has {len(layers)} layers; cannot drop {drop}",
                            code=ErrorCode.step_not_applicable)
    blocked = [layers[i].name for i in drop if not layers[i].droppable]
    if blocked:
        raise InvalidRecipe(f"drop_layers: {blocked} have more than one input or output stream",
                            code=ErrorCode.step_not_applicable)
    for i in sorted(drop, reverse=True):
        layer = layers[i]
        if layer.output in graph.outputs:
            graph.g.node.append(helper.make_node("Identity", [layer.input], [layer.output + "_kept"]))
            graph.reindex()
            graph.rename_input(layer.output, layer.output + "_kept")
        else:
            graph.rename_input(layer.output, layer.input)
    graph.drop_unused()
    ctx.notes.append(f"drop_layers removed layers {drop} of {len(layers)} ({', '.join(layers[i].name for i in drop)})")
    return ModelHandle(graph.save(ctx.path("shallower.onnx")))
