"""Checks an uploaded model (ONNX, or a `.pt2` through core/checks/pt2_safety.py and pt2_signature.py) before
anything runs it, and reads its inputs and outputs, in a child process held to limits (core/sandbox.py).

Uses the `onnx` package only (protobuf parsing and the checker); onnxruntime never sees a file that
failed here. Models must be self-contained: tensors stored outside the file are refused, in every graph,
subgraph and local function.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from core import sandbox
from core.assets import TensorSpec, mark_batch_axes
from core.errors import ErrorCode, InvalidModel
from core.modelinfo import find_layers, integer_ranges, operators
from core.sandbox import Limits
from core.settings import Settings

MAX_NODES = 200_000
# The check runs in a process of its own, held to this much address space plus a few times the file's size,
# and to PARETO_CHECK_CPU_S of CPU time and PARETO_CHECK_TIMEOUT_S of wall time.
CHECK_BASE_BYTES = 512 << 20
CHECK_BYTES_PER_FILE_BYTE = 4


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


def _nodes(nodes):
    """Every node, those of subgraphs (If, Loop, Scan bodies) included, depth first and without recursion."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        for a in node.attribute:
            todo += [n for g in (*([a.g] if a.HasField("g") else []), *a.graphs) for n in g.node]


def _all_nodes(model: onnx.ModelProto):
    yield from _nodes(model.graph.node)
    for function in model.functions:
        yield from _nodes(function.node)


def _subgraphs(model: onnx.ModelProto):
    for node in _all_nodes(model):
        for a in node.attribute:
            yield from ([a.g] if a.HasField("g") else [])
            yield from a.graphs


def _tensors(model: onnx.ModelProto):
    """Every tensor stored in the model: initializers (sparse ones too) of every graph, and tensor
    attributes of every node, in subgraphs and local functions as well."""
    for graph in (model.graph, *_subgraphs(model)):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node in _all_nodes(model):
        for a in node.attribute:
            yield from ([a.t] if a.HasField("t") else [])
            yield from a.tensors
            for sparse in (*([a.sparse_tensor] if a.HasField("sparse_tensor") else []), *a.sparse_tensors):
                yield from (sparse.values, sparse.indices)


def _refuse_external_data(model: onnx.ModelProto) -> None:
    for t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL or t.external_data:
            raise InvalidModel(
                f"tensor {t.name!r} is stored outside the file; upload a single self-contained .onnx "
                "(onnx.save(model, path, save_as_external_data=False))",
                code=ErrorCode.external_data,
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


CHECKERS = {"onnx": "core.checks.model", "pt2": "core.checks.pt2_signature"}  # the module each format's child runs


def prepare_checks() -> None:
    """The checks' child processes started ahead (the gateway's start), so that the first upload waits for
    none."""
    for module in CHECKERS.values():
        sandbox.prepare(module, sandbox.QUIET_THREADS)


def inspect_model(path: Path, fmt: str, settings: Settings) -> dict:
    """{inputs, outputs, operators, layers} of an upload; InvalidModel with the reason if it is not one.
    The file is read in a process of its own (core/sandbox.py): a hostile or huge file costs that process,
    never the gateway's memory or CPU."""
    limits = Limits(CHECK_BASE_BYTES + CHECK_BYTES_PER_FILE_BYTE * path.stat().st_size, settings.check_cpu_s,
                    settings.check_timeout_s)
    module = CHECKERS[fmt]
    scratch = Path(tempfile.mkdtemp(prefix="check-", dir=path.parent))
    try:
        found = sandbox.run(module, [str(path), str(settings.max_upload_bytes)], limits, scratch,
                            env=sandbox.QUIET_THREADS)
    except sandbox.LimitExceeded as e:
        raise InvalidModel(f"the {fmt} check could not read the model: {e.message}",
                           code=ErrorCode.model_check_limit) from e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "refused" in found:
        raise InvalidModel(found["refused"], code=found["code"])
    if fmt == "pt2":
        found["operators"] = onnx_equivalents(found.pop("targets"))
    return {**found, "inputs": [TensorSpec(**t) for t in found["inputs"]],
            "outputs": [TensorSpec(**t) for t in found["outputs"]]}


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
    nodes = sum(1 for _ in itertools.islice(_all_nodes(model), MAX_NODES + 1))
    if nodes > MAX_NODES:
        raise InvalidModel(f"the graph has more than {MAX_NODES} nodes (subgraphs and functions counted); "
                           f"the limit is {MAX_NODES}")
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
    ranges = integer_ranges(model, [s.name for s in inputs if s.dtype.startswith(("int", "uint"))])
    inputs = [s.model_copy(update={"value_range": ranges.get(s.name)}) for s in mark_batch_axes(inputs, outputs)]
    return model, inputs, outputs


if __name__ == "__main__":  # python -m core.sandbox ... core.checks.model FILE MAX_BYTES (inspect_model)
    print(json.dumps(_summary(Path(sys.argv[1]))))
