"""distill: the current model learns the teacher's outputs (and the labels, when there are some)."""

from __future__ import annotations

from pathlib import Path

import onnx

from core.errors import ErrorCode, InvalidRecipe
from core.steps.distill import Distill
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext
from workers.training.layers import LayerMatch, match
from workers.training.loop import train
from workers.training.objectives import loss_kind, objective_for


@implements(Distill)
def distill(handle: ModelHandle, p: Distill, ctx: StepContext) -> ModelHandle:
    kind = loss_kind(p.loss, ctx.data.task)
    objective = objective_for(kind, p.temperature, p.alpha, ctx.data.task)
    teacher = ctx.teacher(p.teacher)
    layers = layer_match(handle.onnx_path, teacher, p, ctx)
    out = train(handle.onnx_path, p, ctx, objective, ctx.path("distilled.onnx"), teacher=teacher, layers=layers)
    ctx.notes.append(f"distill: {kind} loss from teacher {p.teacher}")
    return ModelHandle(out)


def layer_match(student: Path, teacher: Path, p: Distill, ctx: StepContext) -> LayerMatch | None:
    """The student and teacher layers whose hidden states (and attention) are matched, said in the notes."""
    if p.layers == "off":
        return None
    found = match(onnx.load(str(student), load_external_data=False), onnx.load(str(teacher), load_external_data=False),
                  attention=p.layers != "hidden", weight=p.layer_weight)
    if isinstance(found, str):
        raise InvalidRecipe(f"distill layers={p.layers}: {found}", code=ErrorCode.step_not_applicable)
    ctx.notes.append(f"distill: {len(found.hidden)} hidden states and {len(found.attention)} attention maps "
                     f"matched layer by layer (weight {p.layer_weight})")
    return found
