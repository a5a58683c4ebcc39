from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.steps.base import StepParams

# operators only a quantized graph holds
QUANTIZED_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear",
                 "MatMulNBits", "QGemm", "QAttention", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QLinearAdd",
                 "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearSoftmax", "QLinearWhere"}

DTYPES_BY_MODE = {
    "dynamic": ("int8",),
    "static": ("int8",),
    "auto": ("int8",),
    "weight_only": ("int4",),
    "float": ("fp16", "bf16"),
}


class Smooth(BaseModel):
    """SmoothQuant: activation outliers moved into the weights before int8 (see Quantize.smooth)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float | None = Field(
        None, gt=0, lt=1, description="How much of each channel's range moves into the weights (0.5: half, "
        "in the geometric sense). Unset: 0.5, 0.65 and 0.8 are tried and the one whose dynamic int8 keeps the "
        "highest fidelity is taken.")
    calibration_samples: int = Field(64, ge=1, le=4096, description="Samples whose activation ranges are "
                                     "measured (the job's dataset, else its generated inputs; the notes say which).")


class Quantize(StepParams):
    """Lower the precision of weights (and activations) to shrink and speed up the model."""

    summary = "Quantize weights (and activations): int8 dynamic or static (QDQ, QOperator), int4 weights, fp16/bf16."
    formats = ("onnx", "pt2")
    dataset = "for mode static (auto calibrates on it when there is one)"
    step: Literal["quantize"] = "quantize"
    mode: Literal["dynamic", "static", "weight_only", "float", "auto"] = Field(
        "dynamic",
        description="dynamic: int8 weights, activations quantized at run time. static: int8 weights and "
        "activations (in quant_format), calibrated on the job's dataset. weight_only: int4 weights in blocks "
        "(MatMulNBits). float: fp16 (computed in fp16 where the execution provider has kernels; on a CPU target it is "
        "first checked to load in a child process and timed against fp16 weights computed in fp32, and the faster "
        "is kept, said in the notes) or bf16 (weights stored in bf16, computed in fp32 after onnxruntime folds the "
        "casts at load). auto: tries the int8 "
        "modes that apply (static needs a dataset; dynamic also on the transformer-fused graph where onnxruntime "
        "can fuse the model's encoder layers), measures fidelity, then the latency on the target of those that hold "
        "min_fidelity, and keeps the fastest of them (else the most faithful).",
    )
    dtype: Literal["int8", "int4", "fp16", "bf16"] | None = Field(
        None, description="Target precision; unset: the mode's own (int8; int4 for weight_only; fp16 for float), "
        "so that a search over mode needs no dtype.")
    per_channel: bool = Field(True, description="One scale per output channel (int8).")
    channel_spread: float | None = Field(
        None, gt=1, description="dynamic int8 with per_channel: one scale per output channel only for the MatMul "
        "layers whose output channels' weight ranges differ by more than this factor (largest / median), one scale "
        "per tensor for the others (smaller and as fast; auto tries 4). Unset: per_channel decides for every layer.")
    quant_format: Literal["qdq", "qoperator"] = Field(
        "qdq", description="static int8: qdq, Quantize/DequantizeLinear pairs around float operators (every "
        "execution provider takes it, TensorRT needs it), or qoperator, integer operators (QLinearConv, "
        "QLinearMatMul, ...) with uint8 activations: onnxruntime CPU only, a smaller file. auto tries both where "
        "the target is the CPU.")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="Calibration (static).")
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile for method=percentile.")
    calibration_samples: int = Field(128, ge=1, le=10000, description="Samples used to calibrate (static).")
    block_size: int = Field(32, description="Weights per quantization block (weight_only): 16, 32, 64, 128 or 256.")
    symmetric: bool = Field(True, description="Symmetric int4 blocks (weight_only).")
    embeddings: bool = Field(
        True, description="weight_only: embedding tables (a Gather from a constant float table of 64 rows or more: "
        "token and position embeddings) in 4-bit blocks too (onnxruntime's GatherBlockQuantized; the graph's opset "
        "is raised to 21 for it). In a small text encoder they are half the weights: all-MiniLM-L6-v2 came out "
        "6.3x smaller instead of 1.7x, at cosine 0.962 instead of 0.967.")
    op_types: list[str] | None = Field(
        None,
        description="Operator types to quantize. Default: dynamic MatMul, Gemm, Attention, Gather "
        "(embeddings), LSTM, GRU; Conv is left out because onnxruntime's dynamic ConvInteger is several "
        "times slower than float on CPU. static: Conv, MatMul, Gemm and the ops around them.",
    )
    exclude: list[str] = Field(default_factory=list, description="Node-name globs to keep in float.")
    smooth: Smooth | None = Field(
        None, description="int8 (dynamic, static, auto): SmoothQuant first. Each MatMul's input channels are "
        "divided by a scale and its weight rows multiplied by it (folded into the LayerNormalization before, "
        "else one Mul), so the few activation channels that run far larger than the others stop setting the "
        "whole tensor's int8 scale. The float graph is checked to compute the same (cosine 0.99999) before it is "
        "quantized. auto also tries it unasked where a MatMul input has a channel over 8x the median channel's "
        "range. The notes give the alpha and each layer's outlier ratio before and after.")
    min_fidelity: float = Field(0.99, gt=0, le=1, description="auto: the cosine / top-1 agreement to keep.")
    keep_float_if_faster: bool = Field(
        False, description="auto: also time the input model, and keep it unquantized when it is faster on the "
        "target than the chosen int8 variant (beyond the 5 % counted as a tie, at the batch size where the int8 "
        "one falls furthest behind): small models can run slower in int8, where quantizing and reordering "
        "activations costs more than the integer kernels save. The notes say which was kept and why.")
    fallback: bool = Field(True, description="int8: when the result misses the recipe's quality goals, rank the "
                           "quantized layers by sensitivity and keep the most sensitive ones in float, one more at a "
                           "time, until the goals hold (the report says which, or that it could not).")

    @model_validator(mode="after")
    def _combination(self) -> Quantize:
        allowed = DTYPES_BY_MODE[self.mode]
        if self.dtype is not None and self.dtype not in allowed:
            raise ValueError(f"mode {self.mode!r} takes dtype {' or '.join(allowed)}, not {self.dtype!r}")
        if self.keep_float_if_faster and self.mode != "auto":
            raise ValueError("keep_float_if_faster applies to mode auto")
        if self.quant_format != "qdq" and self.mode != "static":
            raise ValueError("quant_format applies to mode static (auto tries both formats on a CPU target)")
        if self.channel_spread is not None and not (self.mode == "dynamic" and self.per_channel):
            raise ValueError("channel_spread applies to mode dynamic with per_channel")
        if not self.embeddings and self.mode != "weight_only":
            raise ValueError("embeddings applies to mode weight_only (int8 quantizes embedding tables anyway)")
        if self.smooth is not None and self.mode not in ("dynamic", "static", "auto"):
            raise ValueError("smooth applies to int8: mode dynamic, static or auto")
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ValueError("block_size must be 16, 32, 64, 128 or 256")
        return self

    @property
    def precision(self) -> str:
        return self.dtype or DTYPES_BY_MODE[self.mode][0]

    @property
    def needs_data(self) -> bool:
        return self.mode == "static"

    def preflight(self, model, target) -> list[str]:
        problems = []
        wanted = {"weight_only": {"MatMul", "Gemm"}, "static": {"Conv", "MatMul", "Gemm"}}.get(
            self.mode, {"MatMul", "Gemm", "Conv", "Gather", "Attention", "LSTM", "GRU"})
        quantized = sorted(QUANTIZED_OPS & set(model.operators))
        if self.mode != "float" and quantized:
            problems.append(f"quantize ({self.mode}): the model is already quantized ({', '.join(quantized)}); "
                            "it is not quantized twice")
        elif self.mode != "float" and not wanted & set(model.operators):
            problems.append(f"quantize ({self.mode}): the model has none of the operators it quantizes "
                            f"({', '.join(sorted(wanted))})")
        return problems
