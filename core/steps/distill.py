from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.training import Training


class Distill(Training):
    """Knowledge distillation: the current model (student) learns to answer like a teacher."""

    summary = ("Knowledge distillation from the baseline (or an earlier step's model): logits with temperature "
               "for classifiers, output / embedding MSE for encoders and regressors; labels optional.")
    dataset = "yes (labels optional)"
    step: Literal["distill"] = "distill"
    teacher: Literal["baseline"] | int = Field(
        "baseline", description="baseline, or the 1-based index of an earlier step whose result teaches (e.g. the "
        "grown and trained model in grow-improve-and-shrink).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softens logits (classifiers).")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation loss; the rest goes to the label "
                         "loss when the dataset has labels.")
    loss: Literal["auto", "kl", "mse", "cosine"] = Field(
        "auto", description="auto: kl for classifiers (integer labels or none and 2-D logits of a classifier "
        "teacher), mse on the outputs otherwise (embeddings, hidden states, regression).")
