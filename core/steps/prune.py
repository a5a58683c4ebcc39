from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.common import LayerSelection


class Prune(LayerSelection):
    """Remove weights: zero them (magnitude, 2:4) or cut whole channels / heads out of the graph."""

    summary = ("Prune weights: unstructured magnitude, 2:4 semi-structured, or structured channels, filters and "
               "attention heads physically removed (dependency-aware).")
    formats = ("onnx", "pt2")
    step: Literal["prune"] = "prune"
    method: Literal["magnitude", "semi_structured", "structured"] = Field(
        "magnitude",
        description="magnitude: zero the smallest weights (the saving shows in nonzero_params and gzip size). "
        "semi_structured: 2 of every 4 consecutive input weights zeroed (2:4). structured: remove output "
        "channels / filters / FFN neurons / attention heads and every weight that reads them, so parameters, "
        "MACs and latency drop.",
    )
    ratio: float = Field(0.5, gt=0, lt=1, description="Fraction removed: sparsity (magnitude) or channels and "
                         "heads per group (structured). semi_structured is always 0.5.")
    scope: Literal["per_layer", "global"] = Field("per_layer", description="magnitude: one threshold per layer "
                                                  "or one for all layers.")
    heads: bool = Field(True, description="structured: prune attention heads too, at the same ratio.")
    round_to: int = Field(
        1, ge=1, le=128, description="structured: keep a multiple of this many channels in each layer (at least "
        "this many). 8 or 16 lets CPU kernels that work on blocks of channels apply: the digits CNN with 70 % of its "
        "channels pruned ran about 3.5x faster at batch 32 with 8 than with the exact counts (10, 19, 38).")
