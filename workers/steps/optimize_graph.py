"""optimize_graph: onnxruntime's graph optimizations applied once and saved into the model; at the levels
that write onnxruntime operators, transformer encoders are fused first (workers/graph/fusion.py)."""

from __future__ import annotations

from core.steps.optimize_graph import OptimizeGraph
from workers.graph.fusion import described, fuse_transformer
from workers.measure.variants import compare, latency_text, slowness
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext

SAME = 0.9999  # fidelity to the input model a fused graph must keep (mean cosine, or top-1 agreement)


@implements(OptimizeGraph)
def optimize_graph(handle: ModelHandle, p: OptimizeGraph, ctx: StepContext) -> ModelHandle:
    import onnxruntime as ort

    src, out = handle.onnx_path, ctx.path("optimized.onnx")
    if p.level != "basic":
        src = _fused(src, ctx) or src
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[p.level]
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=ctx.providers)
    if p.level == "all":
        ctx.notes.append("optimize_graph level all: the saved layout is specific to " + ctx.providers[0])
    return ModelHandle(out)


def _fused(src, ctx: StepContext):
    """The transformer-fused graph, where the model has one, it computes what the input does, and it is
    faster on the target across its batch sizes (at 1 thread on a small CPU it can be slower)."""
    fused = ctx.path("fused.onnx")
    counts = fuse_transformer(src, fused)
    if not counts:
        return None
    trials = compare(src, {"fused": fused, "unfused": src}, ctx)
    slow, same = slowness(trials), trials["fused"].fidelity
    keep = same >= SAME and slow["fused"] < slow["unfused"]
    verdict = "applied" if keep else "left out"
    ctx.notes.append(f"optimize_graph: transformer fusion ({described(counts)}) {verdict}: fused "
                     f"{latency_text(trials['fused'])}; unfused {latency_text(trials['unfused'])}; "
                     f"outputs' cosine {same:.5f}")
    return fused if keep else None
