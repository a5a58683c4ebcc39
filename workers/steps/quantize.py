"""quantize: onnxruntime's quantization tools on the ONNX model."""

from __future__ import annotations

import fnmatch

import onnx

from core.steps.quantize import Quantize
from workers.handle import ModelHandle, StepContext
from workers.steps import implements


def excluded_nodes(model: onnx.ModelProto, globs: list[str]) -> list[str]:
    return [n.name for n in model.graph.node if n.name and any(fnmatch.fnmatch(n.name, g) for g in globs)]


@implements(Quantize)
def quantize(handle: ModelHandle, p: Quantize, ctx: StepContext) -> ModelHandle:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(handle.onnx_path))
    out = ctx.path("quantized.onnx")
    quantize_dynamic(
        handle.onnx_path,
        out,
        op_types_to_quantize=p.op_types,
        per_channel=p.per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded_nodes(model, p.exclude),
        extra_options={"MatMulConstBOnly": True},
    )
    return ModelHandle(out)
