"""factorize: truncated SVD of Linear and Conv weights, each replaced by two thinner layers."""

from __future__ import annotations

from onnx import helper

from core.errors import ErrorCode, InvalidRecipe
from core.steps.factorize import Factorize
from workers.graph.low_rank import factor_linear, replace_node, split
from workers.graph.onnx_graph import Graph, WeightOp
from workers.steps import implements
from workers.steps.common import selected
from workers.steps.context import ModelHandle, StepContext


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
    replace_node(graph, n, [first, second])
    return True


@implements(Factorize)
def factorize(handle: ModelHandle, p: Factorize, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    ops = [op for op in selected(graph, p) if p.layers in ("all", op.kind)]
    done = [op.name for op in ops if (factor_conv if op.kind == "conv" else factor_linear)(graph, op, p)]
    if not done:
        raise InvalidRecipe(f"factorize: no layer saves at least {p.min_saving:.0%} of its parameters at this rank",
                            code=ErrorCode.step_not_applicable)
    graph.reindex()
    graph.drop_unused()
    ctx.notes.append(f"factorize replaced {len(done)} of {len(ops)} layers by low-rank pairs")
    return ModelHandle(graph.save(ctx.path("factorized.onnx")))
