"""swap_layers: efficient layers in place of standard ones, fitted to them by least squares.

A k x k convolution W [out, in, k, k] becomes a depthwise k x k convolution D (r filters per input channel)
followed by a pointwise 1 x 1 convolution P: W[:, i] ~ sum over the r filters of P[:, i, j] outer D[i, j], the
best rank-r fit of each input channel's filters (truncated SVD of W[:, i] as an out x k*k matrix). A Linear
layer becomes a low-rank pair or a bottleneck of a chosen width, with factorize's SVD split.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from core.errors import ErrorCode, InvalidRecipe
from core.steps.factorize import Factorize
from core.steps.swap_layers import SwapLayers
from workers.graph.low_rank import factor_linear
from workers.graph.onnx_graph import Graph, WeightOp, matches
from workers.steps import implements
from workers.steps.common import selected
from workers.steps.context import ModelHandle, StepContext


def separable(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(depthwise [in*rank, 1, kh, kw], pointwise [out, in*rank, 1, 1]) fitting w [out, in, kh, kw]."""
    out, inp, kh, kw = w.shape
    depth = np.zeros((inp * rank, 1, kh, kw), w.dtype)
    point = np.zeros((out, inp * rank, 1, 1), w.dtype)
    for i in range(inp):
        u, s, vt = np.linalg.svd(w[:, i].reshape(out, kh * kw).astype(np.float64), full_matrices=False)
        for j in range(min(rank, len(s))):
            root = np.sqrt(s[j])
            depth[i * rank + j, 0] = (root * vt[j]).reshape(kh, kw)
            point[:, i * rank + j, 0, 0] = root * u[:, j]
    return depth, point


def saving(w: np.ndarray, rank: int) -> float:
    """The fraction of parameters (and of MACs, which scale alike at a given output size) the swap removes."""
    out, inp, kh, kw = w.shape
    return 1 - (inp * rank * kh * kw + out * inp * rank) / (out * inp * kh * kw)


def swap_conv(graph: Graph, op: WeightOp, p: SwapLayers) -> bool:
    w = graph.array(op.weight)
    if w.ndim != 4 or w.shape[2] * w.shape[3] == 1 or saving(w, p.depthwise_rank) < p.min_saving:
        return False
    depth, point = separable(w, p.depthwise_rank)
    n = op.node
    d = graph.add_initializer(op.weight + "_depthwise", depth)
    pw = graph.add_initializer(op.weight + "_pointwise", point)
    mid = graph.unique(n.output[0] + "_depthwise")
    first = helper.make_node("Conv", [n.input[0], d], [mid], name=n.name + "/depthwise")
    first.attribute.extend(a for a in n.attribute if a.name != "group")
    first.attribute.append(helper.make_attribute("group", w.shape[1]))
    second = helper.make_node("Conv", [mid, pw, *n.input[2:]], list(n.output), name=n.name + "/pointwise",
                              kernel_shape=[1, 1])
    index = list(graph.g.node).index(n)
    graph.g.node.remove(n)
    graph.g.node.insert(index, second)
    graph.g.node.insert(index, first)
    return True


def swap_linear(graph: Graph, op: WeightOp, p: SwapLayers) -> bool:
    w = graph.array(op.weight)
    full = min(w.shape)
    rank = p.width if p.linear == "bottleneck" else max(1, int(round(p.rank_ratio * full)))
    if rank >= full:
        return False
    return factor_linear(graph, op, Factorize(rank_ratio=rank / full, min_saving=p.min_saving))


@implements(SwapLayers)
def swap_layers(handle: ModelHandle, p: SwapLayers, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    ops = [op for op in selected(graph, p) if matches(op.name, p.layers)]
    swapped = {"conv": 0, "linear": 0}
    for op in ops:
        if op.kind == "conv" and p.conv != "keep" and swap_conv(graph, op, p):
            swapped["conv"] += 1
        elif op.kind == "linear" and p.linear != "keep" and swap_linear(graph, op, p):
            swapped["linear"] += 1
    if not any(swapped.values()):
        raise InvalidRecipe(f"swap_layers: no selected layer saves {p.min_saving:.0%} of its parameters and MACs "
                            "by the swap", code=ErrorCode.step_not_applicable)
    graph.reindex()
    graph.drop_unused()
    ctx.notes.append(f"swap_layers: {swapped['conv']} convolutions made depthwise-separable, "
                     f"{swapped['linear']} linear layers made {p.linear}")
    return ModelHandle(graph.save(ctx.path("swapped.onnx")))
