"""factorize: truncated SVD of Linear and Conv weights, each replaced by two thinner layers."""

from __future__ import annotations

import numpy as np
from onnx import helper

from core.errors import InvalidRecipe
from core.steps.factorize import Factorize
from workers.handle import ModelHandle, StepContext
from workers.onnxgraph import Graph, WeightOp
from workers.steps import implements
from workers.steps.prune import selected


def rank_for(singular: np.ndarray, p: Factorize) -> int:
    if p.energy is not None:
        energy = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-30)
        return int(np.searchsorted(energy, p.energy) + 1)
    return max(1, int(round(p.rank_ratio * len(singular))))


def split(matrix: np.ndarray, p: Factorize) -> tuple[np.ndarray, np.ndarray] | None:
    """matrix [m, n] ~ left [m, r] @ right [r, n], or None when that would not save min_saving."""
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    r = rank_for(s, p)
    m, n = matrix.shape
    if r * (m + n) > (1 - p.min_saving) * m * n:
        return None
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(matrix.dtype), (root[:, None] * vt[:r]).astype(matrix.dtype)


def _replace(graph: Graph, old, nodes: list) -> None:
    index = list(graph.g.node).index(old)
    graph.g.node.remove(old)
    for offset, node in enumerate(nodes):
        graph.g.node.insert(index + offset, node)


def factor_linear(graph: Graph, op: WeightOp, p: Factorize) -> bool:
    w = graph.array(op.weight)
    kn = w.T if op.out_axis == 0 else w  # [in, out]
    parts = split(kn, p)
    if parts is None:
        return False
    left, right = parts
    n = op.node
    a = graph.add_initializer(op.weight + "_svd_in", left)
    b = graph.add_initializer(op.weight + "_svd_out", right)
    mid = graph.unique(n.output[0] + "_low_rank")
    if n.op_type == "Gemm":
        second = helper.make_node("Gemm", [mid, b, *n.input[2:]], list(n.output), name=n.name + "/svd_out")
    else:
        second = helper.make_node("MatMul", [mid, b], list(n.output), name=n.name + "/svd_out")
    _replace(graph, n, [helper.make_node("MatMul", [n.input[0], a], [mid], name=n.name + "/svd_in"), second])
    return True


def factor_conv(graph: Graph, op: WeightOp, p: Factorize) -> bool:
    w = graph.array(op.weight)  # [out, in, kh, kw]
    parts = split(w.reshape(w.shape[0], -1), p)
    if parts is None:
        return False
    left, right = parts  # [out, r], [r, in*kh*kw]
    r = left.shape[1]
    n = op.node
    spatial = graph.add_initializer(op.weight + "_svd_spatial", right.reshape(r, *w.shape[1:]))
    mix = graph.add_initializer(op.weight + "_svd_mix", left.reshape(w.shape[0], r, *[1] * (w.ndim - 2)))
    mid = graph.unique(n.output[0] + "_low_rank")
    first = helper.make_node("Conv", [n.input[0], spatial], [mid], name=n.name + "/svd_spatial")
    first.attribute.extend(n.attribute)
    second = helper.make_node("Conv", [mid, mix, *n.input[2:]], list(n.output), name=n.name + "/svd_mix",
                              kernel_shape=[1] * (w.ndim - 2))
    _replace(graph, n, [first, second])
    return True


@implements(Factorize)
def factorize(handle: ModelHandle, p: Factorize, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    ops = [op for op in selected(graph, p) if p.layers in ("all", op.kind)]
    done = [op.name for op in ops if (factor_conv if op.kind == "conv" else factor_linear)(graph, op, p)]
    if not done:
        raise InvalidRecipe(f"factorize: no layer saves at least {p.min_saving:.0%} of its parameters at this rank",
                            code="step_not_applicable")
    graph.reindex()
    graph.drop_unused()
    ctx.notes.append(f"factorize replaced {len(done)} of {len(ops)} layers by low-rank pairs")
    return ModelHandle(graph.save(ctx.path("factorized.onnx")))
