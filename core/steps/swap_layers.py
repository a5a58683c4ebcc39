from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.steps.common import LayerSelection


class SwapLayers(LayerSelection):
    """Efficient layers in place of standard ones, initialized to approximate them."""

    summary = ("Swap standard layers for efficient ones, initialized by a least-squares fit to the original: "
               "k x k convolutions become depthwise-separable (depthwise k x k + pointwise 1 x 1), Linear layers "
               "a low-rank pair or a bottleneck of a chosen width; only where parameters and MACs drop. Recover "
               "the quality with distill in the same recipe.")
    formats = ("onnx", "pt2")
    step: Literal["swap_layers"] = "swap_layers"
    conv: Literal["depthwise_separable", "keep"] = Field("depthwise_separable", description="What k x k "
                                                         "convolutions become.")
    depthwise_rank: int = Field(1, ge=1, le=16, description="Depthwise filters per input channel (a rank-r fit "
                                "of each input channel's filters).")
    linear: Literal["low_rank", "bottleneck", "keep"] = Field("keep", description="What Linear layers become.")
    rank_ratio: float = Field(0.25, gt=0, lt=1, description="low_rank: rank as a fraction of the full rank.")
    width: int | None = Field(None, ge=1, description="bottleneck: the inner width.")
    layers: list[str] = Field(default_factory=lambda: ["*"], description="Node-name globs of the layers to swap.")
    min_saving: float = Field(0.2, ge=0, lt=1, description="Swap a layer only when its parameters and MACs drop "
                              "by at least this fraction.")

    @model_validator(mode="after")
    def _something(self) -> SwapLayers:
        if self.conv == "keep" and self.linear == "keep":
            raise ValueError("swap_layers with conv and linear both 'keep' swaps nothing")
        if self.linear == "bottleneck" and self.width is None:
            raise ValueError("linear 'bottleneck' needs width")
        return self

    def preflight(self, model, target) -> list[str]:
        wanted = ({"Conv"} if self.conv != "keep" else set()) | ({"MatMul", "Gemm"} if self.linear != "keep" else set())
        if not wanted & set(model.operators):
            return [f"swap_layers: the model has no {' or '.join(sorted(wanted))} layer to swap"]
        return []
