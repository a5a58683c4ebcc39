"""Helpers the steps share (a step never imports another step's module for them)."""

from __future__ import annotations

from workers.graph.onnx_graph import Graph, WeightOp, classifier_ops, matches


def selected(graph: Graph, p, ops: list[WeightOp] | None = None) -> list[WeightOp]:
    """The weight layers a step may touch: not ignored, and not the classifier unless asked."""
    ops = graph.weight_ops() if ops is None else ops
    kept = classifier_ops(graph, ops) if p.keep_classifier else set()
    return [op for op in ops if op.name not in kept and not matches(op.name, p.ignore)]
