"""What a student learns from its teacher: the distillation losses distill and qat share."""

from __future__ import annotations

import torch.nn.functional as F

from workers.training.loop import label_loss, mixed


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
