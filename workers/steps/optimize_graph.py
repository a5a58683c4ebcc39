"""optimize_graph: onnxruntime's graph optimizations applied once and saved into the model."""

from __future__ import annotations

from core.steps.optimize_graph import OptimizeGraph
from workers.handle import ModelHandle, StepContext
from workers.steps import implements


@implements(OptimizeGraph)
def optimize_graph(handle: ModelHandle, p: OptimizeGraph, ctx: StepContext) -> ModelHandle:
    import onnxruntime as ort

    out = ctx.path("optimized.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[p.level]
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(handle.onnx_path), opts, providers=ctx.providers)
    if p.level == "all":
        ctx.notes.append("optimize_graph level all: the saved layout is specific to " + ctx.providers[0])
    return ModelHandle(out)
