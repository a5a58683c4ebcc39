"""Parameters several shrinking steps share."""

from __future__ import annotations

from pydantic import Field

from core.steps.base import StepParams

WEIGHT_OPS = {"MatMul", "Gemm", "Conv"}


class LayerSelection(StepParams):
    """Which weight layers a step may touch."""

    ignore: list[str] = Field(default_factory=list, description="Node-name globs of layers to leave alone.")
    keep_classifier: bool = Field(True, description="Leave the final classifier / projection alone.")

    def preflight(self, model, target) -> list[str]:
        if not WEIGHT_OPS & set(model.operators):
            return [f"{self.name}: the model has no MatMul, Gemm or Conv layer with constant weights"]
        return []
