"""distill: the current model learns the teacher's outputs (and the labels, when there are some)."""

from __future__ import annotations

from core.steps.distill import Distill
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext
from workers.training.loop import train
from workers.training.objectives import loss_kind, objective_for


@implements(Distill)
def distill(handle: ModelHandle, p: Distill, ctx: StepContext) -> ModelHandle:
    kind = loss_kind(p.loss, ctx.data.task)
    objective = objective_for(kind, p.temperature, p.alpha, ctx.data.task)
    out = train(handle.onnx_path, p, ctx, objective, ctx.path("distilled.onnx"), teacher=ctx.teacher(p.teacher))
    ctx.notes.append(f"distill: {kind} loss from teacher {p.teacher}")
    return ModelHandle(out)
