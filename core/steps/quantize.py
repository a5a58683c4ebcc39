from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.base import StepParams


class Quantize(StepParams):
    """Lower the precision of weights (and activations) to shrink and speed up the model."""

    summary = "Quantize weights (and activations) to a lower precision."
    step: Literal["quantize"] = "quantize"
    mode: Literal["dynamic"] = Field(
        "dynamic", description="dynamic: int8 weights, activations quantized at run time."
    )
    dtype: Literal["int8"] = Field("int8", description="Target precision of the weights.")
    per_channel: bool = Field(
        True, description="One scale per output channel (keeps more fidelity than one per tensor)."
    )
    op_types: list[str] = Field(
        default_factory=lambda: ["MatMul", "Gemm", "Attention", "LSTM", "GRU"],
        description="Operator types to quantize. Conv is left out by default: onnxruntime's dynamic "
        "ConvInteger is several times slower than float convolution on CPU.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Node-name globs to keep in float, e.g. ['*classifier*']."
    )
