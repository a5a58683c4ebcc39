from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.steps.base import StepParams


class DropLayers(StepParams):
    """Depth shrink: remove whole layers of a transformer encoder or a sequential stack."""

    summary = ("Remove whole layers: transformer encoder layers (found by their names, e.g. encoder/layer.3) "
               "or same-width blocks of a sequential stack; the layer's input flows straight to its output.")
    formats = ("onnx", "pt2")
    step: Literal["drop_layers"] = "drop_layers"
    keep_every: int | None = Field(None, ge=2, le=64, description="Keep every k-th layer, counting back from "
                                   "the last one (6 layers, k=2: keeps 1, 3, 5); 2 unless drop is given.")
    drop: list[int] | None = Field(None, description="Instead: the indexes of the layers to drop.")

    @model_validator(mode="before")
    @classmethod
    def _every_second_by_default(cls, data):
        if isinstance(data, dict) and data.get("drop") is None and data.get("keep_every") is None:
            data = {**data, "keep_every": 2}
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> DropLayers:
        if self.drop is not None and self.keep_every is not None:
            raise ValueError("give keep_every or drop, not both")
        if self.drop is not None and (not self.drop or any(i < 0 for i in self.drop)):
            raise ValueError("drop lists layer indexes (0, 1, ...)")
        return self

    def preflight(self, model, target) -> list[str]:
        if model.layers == 0 or (self.drop is None and model.layers < 2):
            return ["drop_layers: no repeated layers were found in the model (transformer layers named like "
                    "layer.N / layers.N / blocks.N, or same-width blocks of a sequential stack)"]
        if self.drop is not None and max(self.drop) >= model.layers:
            return [f"drop_layers: the model has {model.layers} layers; cannot drop {max(self.drop)}"]
        return []
