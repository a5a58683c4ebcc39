"""Reads a checked `torch.export` program's inputs, outputs, operators and repeated layers from its
models/model.json, without torch: what the gateway lists for an upload and steps are checked against."""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.assets import TensorSpec, mark_batch_axes
from core.checks.pt2_safety import checked_program
from core.errors import ErrorCode, InvalidModel

# ----------------------------------------------------------------------------------------------------
# Inputs, outputs and operators from models/model.json
# ----------------------------------------------------------------------------------------------------

# torch/_export/serde/schema.py ScalarType -> numpy dtype name (names numpy lacks are torch's own)
_DTYPES = {
    1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64",
    9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16", 28: "uint16",
    29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz",
    33: "float8_e8m0fnu", 34: "uint32", 35: "uint64",
}


def _dig(obj, *keys):
    """obj[k1][k2]..., or None where a step is missing or not a dict (model.json is untrusted)."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _dim(size) -> int | str | None:
    if type(_dig(size, "as_int")) is int:
        return size["as_int"]
    expr = _dig(size, "as_expr", "expr_str")
    if not isinstance(expr, str):
        return None
    # srepr -> a readable name: Symbol('s31', positive=True, integer=True) -> s31, Integer(2) -> 2
    expr = re.sub(r"Symbol\('(\w+)'(?:, \w+=\w+)*\)", r"\1", expr)
    return re.sub(r"Integer\((-?\d+)\)", r"\1", expr)


def _tensor_spec(graph: dict, arg, role: str) -> TensorSpec:
    name = _dig(arg, "as_tensor", "name")
    if not isinstance(name, str):
        kind = next(iter(arg), "?") if isinstance(arg, dict) and arg else "?"
        raise InvalidModel(f"a user {role} is not a tensor ({kind}); only tensor inputs and outputs are "
                           "supported", code=ErrorCode.unsupported_model)
    meta = _dig(graph, "tensor_values", name)
    dtype, sizes = _dig(meta, "dtype"), _dig(meta, "sizes")
    if type(dtype) is not int or dtype not in _DTYPES or not isinstance(sizes, list):
        raise InvalidModel(f"{role} {name!r}: missing or unsupported tensor metadata in models/model.json",
                           code=ErrorCode.unsupported_model)
    return TensorSpec(name=name, dtype=_DTYPES[dtype], shape=[_dim(s) for s in sizes])


def _user_specs(graph: dict, specs, kind: str, role: str) -> list[TensorSpec]:
    out = []
    for spec in specs if isinstance(specs, list) else []:
        if isinstance(spec, dict) and kind in spec:
            out.append(_tensor_spec(graph, _dig(spec, kind, "arg"), role))
    return out


def _operators(graph_module) -> list[str]:
    """Distinct call targets of every node, nested subgraphs (control flow) included."""
    targets: set[str] = set()
    todo = [graph_module]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("target"), str) and "inputs" in node and "outputs" in node:
                targets.add(node["target"])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return sorted(targets)


_LAYER_PATH = re.compile(r"^(.*?(?:^|\.)(?:layer|layers|blocks|block|h))\.(\d+)(?:\.|$)")


def layer_count(graph_module) -> int:
    """Repeated layers (ModuleList entries such as encoder.layer.3), from the nodes' nn_module_stack."""
    indexes: dict[str, set[int]] = {}
    for node in _dig(graph_module, "graph", "nodes") or []:
        stack = _dig(node, "metadata", "nn_module_stack")
        for entry in stack.split(";") if isinstance(stack, str) else []:
            path = entry.split(",")[1] if entry.count(",") >= 2 else ""
            m = _LAYER_PATH.match(path)
            if m:
                indexes.setdefault(m.group(1), set()).add(int(m.group(2)))
    return max((len(v) for v in indexes.values() if len(v) >= 2), default=0)


def _signature(program) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    gm = _dig(program, "graph_module")
    graph, sig = _dig(gm, "graph"), _dig(gm, "signature")
    if not isinstance(graph, dict) or not isinstance(sig, dict):
        raise InvalidModel("models/model.json holds no graph_module.graph / signature; "
                           "save the model with torch.export.save", code=ErrorCode.not_pt2)
    inputs = _user_specs(graph, sig.get("input_specs"), "user_input", "input")
    outputs = _user_specs(graph, sig.get("output_specs"), "user_output", "output")
    if not inputs or not outputs:
        raise InvalidModel("the program needs at least one tensor input and one tensor output",
                           code=ErrorCode.unsupported_model)
    return mark_batch_axes(inputs, outputs), outputs, _operators(gm)


def inspect_pt2(path: Path, max_bytes: int) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    inputs, outputs, operators, _ = describe_pt2(path, max_bytes)
    return inputs, outputs, operators


def describe_pt2(path: Path, max_bytes: int) -> tuple[list[TensorSpec], list[TensorSpec], list[str], int]:
    """Checks a .pt2 archive without importing torch (core/checks/pt2_safety.py) and returns (inputs, outputs,
    operators, layers), where operators is the sorted list of distinct targets in the graph (e.g.
    "torch.ops.aten.linear.default"). InvalidModel with a stable code otherwise: those of checked_program,
    and unsupported_model."""
    program = checked_program(path, max_bytes)
    return (*_signature(program), layer_count(_dig(program, "graph_module")))


def _summary(path: Path, max_bytes: int) -> dict:
    """What the gateway's check (core/checks/model.py) reads from a child process: the program's inputs,
    outputs, call targets and layers as JSON; or {"refused": reason, "code": code}."""
    try:
        inputs, outputs, targets, layers = describe_pt2(path, max_bytes)
    except InvalidModel as e:
        return {"refused": e.message, "code": e.code}
    return {"inputs": [t.model_dump() for t in inputs], "outputs": [t.model_dump() for t in outputs],
            "targets": targets, "layers": layers}


if __name__ == "__main__":  # python -m core.sandbox ... core.checks.pt2_signature FILE MAX_BYTES (checks/model.py)
    import sys

    print(json.dumps(_summary(Path(sys.argv[1]), int(sys.argv[2]))))
