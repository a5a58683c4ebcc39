"""Checks an uploaded ONNX file before anything runs it, and reads its inputs and outputs.

Uses the `onnx` package only (protobuf parsing and the checker); onnxruntime never sees a file that
failed here. Models must be self-contained: tensors stored outside the file are refused.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from core.assets import TensorSpec
from core.errors import InvalidModel
from core.modelinfo import find_layers, operators
from core.pt2check import describe_pt2

MAX_NODES = 200_000


def _dtype(elem_type: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise InvalidModel(f"input/output {value.name!r} is not a tensor; only tensor I/O is supported")
    shape: list[int | str | None] = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            shape.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorSpec(name=value.name, dtype=_dtype(t.elem_type), shape=shape)


def _refuse_external_data(model: onnx.ModelProto) -> None:
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if t.data_location == TensorProto.EXTERNAL or t.external_data:
            raise InvalidModel(
                f"tensor {t.name!r} is stored outside the file; upload a single self-contained .onnx "
                "(onnx.save(model, path, save_as_external_data=False))",
                code="external_data",
            )


# ATen operators of a torch.export program and the ONNX operators they become, for step preflight
ATEN_AS_ONNX = {
    "linear": "MatMul", "addmm": "Gemm", "mm": "MatMul", "matmul": "MatMul", "bmm": "MatMul",
    "conv1d": "Conv", "conv2d": "Conv", "conv3d": "Conv", "convolution": "Conv", "embedding": "Gather",
    "layer_norm": "LayerNormalization", "batch_norm": "BatchNormalization", "relu": "Relu", "gelu": "Gelu",
    "softmax": "Softmax", "_softmax": "Softmax", "scaled_dot_product_attention": "Softmax",
    "max_pool2d": "MaxPool", "avg_pool2d": "AveragePool", "adaptive_avg_pool2d": "GlobalAveragePool",
}


def onnx_equivalents(targets: list[str]) -> list[str]:
    names = {t.split(".")[3] if t.startswith("torch.ops.aten.") and t.count(".") >= 3 else t for t in targets}
    return sorted({ATEN_AS_ONNX.get(n, n) for n in names})


def inspect_model(path: Path, fmt: str, max_bytes: int) -> dict:
    """{inputs, outputs, operators, layers} of an upload; InvalidModel with the reason if it is not one."""
    if fmt == "pt2":
        inputs, outputs, targets, layers = describe_pt2(path, max_bytes)
        return {"inputs": inputs, "outputs": outputs, "operators": onnx_equivalents(targets), "layers": layers}
    model, inputs, outputs = inspect_onnx(path)
    return {"inputs": inputs, "outputs": outputs, "operators": operators(model), "layers": len(find_layers(model))}


def inspect_onnx(path: Path) -> tuple[onnx.ModelProto, list[TensorSpec], list[TensorSpec]]:
    """The model, its graph inputs (initializers excluded) and outputs; InvalidModel with the reason."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InvalidModel(f"not an ONNX model: the protobuf could not be parsed ({e})") from e
    if not model.graph.node and not model.graph.output:
        raise InvalidModel("not an ONNX model: the file holds no graph")
    if len(model.graph.node) > MAX_NODES:
        raise InvalidModel(f"the graph has {len(model.graph.node)} nodes; the limit is {MAX_NODES}")
    _refuse_external_data(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid graph"
        raise InvalidModel(f"the ONNX checker refused the model: {first}") from e
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(v) for v in model.graph.output]
    if not inputs or not outputs:
        raise InvalidModel("the graph needs at least one input and one output")
    return model, inputs, outputs
