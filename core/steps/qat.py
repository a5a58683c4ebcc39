from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.training import Training


class Qat(Training):
    """Quantization-aware training ending in an int8 model."""

    summary = ("Quantization-aware training: weights (per channel) and activations are fake-quantized to int8 "
               "while training (straight-through estimator), then the model is quantized to int8 QDQ with the "
               "same scheme, calibrated on the training data.")
    dataset = "yes (labels or the baseline as teacher)"
    step: Literal["qat"] = "qat"
    epochs: int = Field(3, ge=1, le=1000)
    lr: float = Field(1e-4, gt=0, le=10)
    teacher: Literal["baseline", "none"] = Field("baseline", description="Learn from the baseline's outputs "
                                                 "(no labels needed) or only from labels.")
    temperature: float = Field(2.0, gt=0, le=100)
    exclude: list[str] = Field(default_factory=list, description="Node-name globs kept in float.")

    @property
    def needs_labels(self) -> bool:
        return self.teacher == "none"

    def preflight(self, model, target) -> list[str]:
        if not {"Conv", "MatMul", "Gemm"} & set(model.operators):
            return ["qat: the model has no Conv, MatMul or Gemm layer to quantize"]
        return []
