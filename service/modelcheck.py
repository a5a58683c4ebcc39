"""Checks an uploaded ONNX file before anything runs it, and reads its inputs and outputs.

Uses the `onnx` package only (protobuf parsing and the checker); onnxruntime never sees a file that
failed here. Models must be self-contained: tensors stored outside the file are refused.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from core.assets import TensorSpec
from core.errors import InvalidModel
from core.modelinfo import find_layers, operators
from core.pt2check import describe_pt2

MAX_NODES = 200_000
# The ONNX check runs in a process of its own, held to this much address space plus a few times the file's
# size and to a time limit: a hostile or huge file costs that process, never the gateway's memory.
CHECK_BASE_BYTES = 512 << 20
CHECK_BYTES_PER_FILE_BYTE = 4
CHECK_TIMEOUT_S = 120


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
    found = _in_own_process(path)
    if "refused" in found:
        raise InvalidModel(found["refused"], code=found["code"])
    return {**found, "inputs": [TensorSpec(**t) for t in found["inputs"]],
            "outputs": [TensorSpec(**t) for t in found["outputs"]]}


def _in_own_process(path: Path) -> dict:
    limit = CHECK_BASE_BYTES + CHECK_BYTES_PER_FILE_BYTE * path.stat().st_size
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "service.modelcheck", str(path), str(limit)], env=env,
                              capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise InvalidModel(f"the ONNX check did not finish within {CHECK_TIMEOUT_S} s") from e
    if done.returncode != 0 or not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise InvalidModel(f"the ONNX check could not read the model within {limit >> 20} MiB: {last}")
    return json.loads(done.stdout)


def _summary(path: Path) -> dict:
    """What inspect_model returns for an ONNX file, as JSON; or {"refused": reason, "code": code}."""
    try:
        model, inputs, outputs = inspect_onnx(path)
    except InvalidModel as e:
        return {"refused": e.message, "code": e.code}
    return {"inputs": [t.model_dump() for t in inputs], "outputs": [t.model_dump() for t in outputs],
            "operators": operators(model), "layers": len(find_layers(model))}


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


if __name__ == "__main__":  # python -m service.modelcheck FILE ADDRESS_SPACE_BYTES (see _in_own_process)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps(_summary(Path(sys.argv[1]))))
