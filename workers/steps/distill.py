"""distill: the current model learns the teacher's outputs (and the labels, when there are some)."""

from __future__ import annotations

import torch.nn.functional as F

from core.steps.distill import Distill
from workers.handle import ModelHandle, StepContext
from workers.steps import implements
from workers.train import label_loss, mixed, train


def kl(student, teacher, temperature: float):
    return F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1),
                    reduction="batchmean") * temperature**2


def soft_loss(kind: str, temperature: float):
    if kind == "kl":
        return lambda s, t: kl(s, t, temperature)
    if kind == "cosine":
        return lambda s, t: (1 - F.cosine_similarity(s.flatten(1), t.flatten(1))).mean()
    return lambda s, t: F.mse_loss(s, t)


def objective_for(kind: str, temperature: float, alpha: float, task: str):
    """Distillation loss, plus the label loss weighted 1 - alpha when the batch has labels."""
    soft, hard = soft_loss(kind, temperature), label_loss(task)

    def objective(out, teacher, labels, perm, keep):
        loss = soft(out, teacher)  # the teacher saw the same (mixed) inputs: no target mixing needed
        if labels is not None and alpha < 1:
            loss = alpha * loss + (1 - alpha) * mixed(hard, out, labels, perm, keep)
        return loss

    return objective


def loss_kind(p_loss: str, task: str) -> str:
    if p_loss != "auto":
        return p_loss
    return "kl" if task == "classification" else "mse"


@implements(Distill)
def distill(handle: ModelHandle, p: Distill, ctx: StepContext) -> ModelHandle:
    kind = loss_kind(p.loss, ctx.data.task)
    objective = objective_for(kind, p.temperature, p.alpha, ctx.data.task)
    out = train(handle.onnx_path, p, ctx, objective, ctx.path("distilled.onnx"), teacher=ctx.teacher(p.teacher))
    ctx.notes.append(f"distill: {kind} loss from teacher {p.teacher}")
    return ModelHandle(out)
