"""Low-rank replacement of a linear layer: its weight split by truncated SVD into two thinner ones (the
factorize step, and the efficient-layer swap)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from core.steps.factorize import Factorize
from workers.graph.onnx_graph import Graph, WeightOp


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


def replace_node(graph: Graph, old, nodes: list) -> None:
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
    replace_node(graph, n, [helper.make_node("MatMul", [n.input[0], a], [mid], name=n.name + "/svd_in"), second])
    return True
