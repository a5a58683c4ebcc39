from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.base import StepParams


class OptimizeGraph(StepParams):
    """onnxruntime's graph optimizations, saved into the model."""

    summary = "onnxruntime graph optimizations (constant folding, fusions, transformer fusion), applied once and saved."
    formats = ("onnx", "pt2")
    step: Literal["optimize_graph"] = "optimize_graph"
    level: Literal["basic", "extended", "all"] = Field(
        "extended", description="basic: constant folding and redundancy removal (portable ONNX). extended: "
        "also fusions into onnxruntime operators, transformer encoders' attention, layer norms and GELU "
        "included. all: also layout changes specific to the target's "
        "execution provider.")
