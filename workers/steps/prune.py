"""prune: magnitude and 2:4 sparsity on the weights; structured removal of channels and attention heads."""

from __future__ import annotations

import numpy as np

from core.errors import ErrorCode, InvalidRecipe
from core.steps.prune import Prune
from workers.graph.channels import channel_groups, resize, units_to_channels
from workers.graph.onnx_graph import Graph, WeightOp
from workers.measure.stats import tensor_shapes
from workers.steps import implements
from workers.steps.common import selected
from workers.steps.context import ModelHandle, StepContext


def magnitude(graph: Graph, ops: list[WeightOp], p: Prune) -> None:
    weights = {op.weight: graph.array(op.weight) for op in ops}
    if p.scope == "global":
        everything = np.concatenate([np.abs(w).ravel() for w in weights.values()])
        threshold = np.quantile(everything, p.ratio)
        for name, w in weights.items():
            graph.set_array(name, np.where(np.abs(w) <= threshold, 0, w).astype(w.dtype))
        return
    for name, w in weights.items():
        k = int(round(w.size * p.ratio))
        if k:
            flat = np.abs(w).ravel()
            cut = np.argpartition(flat, k - 1)[:k]
            pruned = w.copy().ravel()
            pruned[cut] = 0
            graph.set_array(name, pruned.reshape(w.shape))


def two_of_four(graph: Graph, ops: list[WeightOp], ctx: StepContext) -> None:
    """In every 4 consecutive weights along the input axis, the 2 smallest become zero."""
    skipped = []
    for op in ops:
        w = graph.array(op.weight)
        moved = np.moveaxis(w, op.in_axis, -1) if op.kind == "linear" else np.moveaxis(w, 1, -1)
        if moved.shape[-1] % 4:
            skipped.append(op.name)
            continue
        blocks = moved.reshape(-1, 4)
        smallest = np.argsort(np.abs(blocks), axis=1)[:, :2]
        blocks = blocks.copy()
        np.put_along_axis(blocks, smallest, 0, axis=1)
        back = blocks.reshape(moved.shape)
        graph.set_array(op.weight, np.moveaxis(back, -1, op.in_axis if op.kind == "linear" else 1))
    if skipped:
        ctx.notes.append(f"prune 2:4 skipped {len(skipped)} layers whose input width is not a multiple of 4")


def structured(graph: Graph, p: Prune, ctx: StepContext) -> None:
    shapes = tensor_shapes(graph.model, ctx.samples.sample_shapes())
    allowed = {op.name for op in selected(graph, p)}
    groups = [g for g in channel_groups(graph, shapes)
              if all(op.name in allowed for op in g.producers) and (p.heads or g.kind != "heads")]
    if not groups:
        raise InvalidRecipe("prune structured found no channels or heads it can remove safely in this model "
                            "(every layer feeds a residual connection, a concatenation or the output)",
                            code=ErrorCode.step_not_applicable)
    removed = {"channels": [0, 0], "heads": [0, 0]}
    for group in groups:
        units = group.size // group.unit
        keep = max(1, int(round(units * (1 - p.ratio))))
        if group.unit == 1 and p.round_to > 1:
            keep = min(units, max(p.round_to, int(round(keep / p.round_to)) * p.round_to))
        if keep >= units:
            continue
        best = np.sort(np.argsort(-group.importance(graph), kind="stable")[:keep])
        resize(graph, group, units_to_channels(best, group.unit))
        removed[group.kind][0] += units - keep
        removed[group.kind][1] += units
    ctx.notes.append("prune structured removed " + ", ".join(
        f"{r} of {t} {kind}" for kind, (r, t) in removed.items() if t))


@implements(Prune)
def prune(handle: ModelHandle, p: Prune, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    if p.method == "structured":
        structured(graph, p, ctx)
    else:
        ops = selected(graph, p)
        if not ops:
            raise InvalidRecipe("prune: no layer is left to prune after `ignore` and keep_classifier",
                                code=ErrorCode.step_not_applicable)
        if p.method == "magnitude":
            magnitude(graph, ops, p)
        else:
            two_of_four(graph, ops, ctx)
    return ModelHandle(graph.save(ctx.path("pruned.onnx")))
