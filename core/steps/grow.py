from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.steps.base import StepParams


class Grow(StepParams):
    """Add capacity without changing what the model computes (before training it further)."""

    summary = ("Function-preserving growth: wider layers (Net2WiderNet: channels copied, their outgoing weights "
               "split so the output is unchanged) and deeper stacks (Net2DeeperNet: identity layers after ReLU "
               "blocks) for MLPs and CNNs; for transformer encoders, layers duplicated.")
    formats = ("onnx", "pt2")
    step: Literal["grow"] = "grow"
    width_multiplier: float = Field(1.0, ge=1, le=8, description="Channels of each growable layer times this.")
    depth_multiplier: float = Field(1.0, ge=1, le=8, description="Layers (blocks) times this.")
    seed: int | None = Field(None, description="Which channels are copied; default: the recipe's data.seed.")

    @model_validator(mode="after")
    def _grows(self) -> Grow:
        if self.width_multiplier == 1 and self.depth_multiplier == 1:
            raise ValueError("grow needs width_multiplier > 1 or depth_multiplier > 1")
        return self

    def preflight(self, model, target) -> list[str]:
        if not {"Conv", "MatMul", "Gemm"} & set(model.operators):
            return ["grow: the model has no Conv, MatMul or Gemm layer to widen or deepen"]
        return []
