from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.steps.common import LayerSelection


class Factorize(LayerSelection):
    """Replace weight matrices by a product of two thin ones (truncated SVD)."""

    summary = ("Low-rank factorization of Linear and Conv layers by truncated SVD; layers where it would not "
               "save parameters are left alone.")
    formats = ("onnx", "pt2")
    step: Literal["factorize"] = "factorize"
    rank_ratio: float | None = Field(0.5, gt=0, lt=1, description="Rank kept, as a fraction of the full rank.")
    energy: float | None = Field(None, gt=0, le=1, description="Instead of rank_ratio: keep the smallest rank "
                                 "whose singular values hold this fraction of the squared sum.")
    layers: Literal["all", "linear", "conv"] = "all"
    min_saving: float = Field(0.1, ge=0, lt=1, description="Skip layers saving less than this fraction of their "
                              "parameters.")

    @model_validator(mode="after")
    def _one_rule(self) -> Factorize:
        if self.energy is not None and "rank_ratio" in self.model_fields_set:
            raise ValueError("give rank_ratio or energy, not both")
        return self
