"""Inputs a hostile tenant (or an unlucky one) sends: builders shared by tests/test_hardening.py and
bench/abuse.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_chain(width: int = 512, layers: int = 8) -> onnx.ModelProto:
    """x [batch, width] through `layers` MatMuls: heavy enough to time for minutes at a large batch."""
    rng = np.random.default_rng(0)
    names = ["x", *[f"h{i}" for i in range(layers - 1)], "y"]
    weights = [numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), f"w{i}")
               for i in range(layers)]
    nodes = [helper.make_node("MatMul", [names[i], f"w{i}"], [names[i + 1]]) for i in range(layers)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def export_small_program(path: Path) -> Path:
    """A real torch.export program (Linear, ReLU, Linear) to turn into hostile ones."""
    import torch

    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.export.save(torch.export.export(seq, (torch.randn(3, 4),)), path)
    return path


def archive_folder(pt2: Path) -> str:
    return zipfile.ZipFile(pt2).namelist()[0].split("/")[0]


def with_members(src: Path, dst: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def many_programs(pt2: Path, out: Path, count: int = 120) -> Path:
    """120 extra programs of 1 MB of JSON each, 2 KB once compressed: a few hundred KB that cost gigabytes to
    parse, each kept in memory as Python objects."""
    program = b'{"graph_module": {"graph": {"nodes": [' + b'{"target": "x"},' * 60_000 + b'{}]}}}'
    return with_members(pt2, out, {f"{archive_folder(pt2)}/models/m{i}.json": program for i in range(count)})


def endless_pickles(pt2: Path, out: Path, count: int = 90) -> Path:
    """90 pickles that push None a million times each, just under the size where the zip-bomb ratio is
    checked: about 100 KB that cost a minute and a half of CPU to walk through."""
    nones = b"\x80\x02" + b"N" * (1024 * 1024 - 16) + b"."  # a valid pickle: its value is the last None
    return with_members(pt2, out, {f"{archive_folder(pt2)}/data/sample_inputs/x{i}.pt": nones for i in range(count)})


def huge_size_expression(pt2: Path, out: Path) -> Path:
    """A symbolic size of 10^(10^10), which sympy would try to compute when torch.export.load reads it."""
    bomb = b'"expr_bomb": {"expr_str": "Pow(Integer(10), Pow(Integer(10), Integer(10)))"}, '
    with zipfile.ZipFile(pt2) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data.replace(b"{", b"{" + bomb, 1) if info.filename.endswith("models/model.json")
                          else data)
    return out


def if_with_external_subgraph_tensor() -> onnx.ModelProto:
    """Tensor data outside the file, declared in an If branch's initializer rather than in the main graph."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "12")):
        w.external_data.add(key=k, value=v)
    branch = helper.make_graph([helper.make_node("Add", ["x", "w"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])], [w])
    identity = helper.make_graph([helper.make_node("Identity", ["x"], ["i"])], "identity", [],
                                 [helper.make_tensor_value_info("i", TensorProto.FLOAT, ["n", 3])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=identity)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def incomplete_shape_inference() -> onnx.ModelProto:
    """onnxruntime's symbolic shape inference gives up on this graph: it guesses the rank of the contrib op
    ExpandDims's output from its input (2, not 3), and the Transpose after it then has no shape. It then writes
    `sym_shape_infer_temp.onnx` and a weights file into the current directory."""
    graph = helper.make_graph(
        [helper.make_node("ExpandDims", ["x", "axis"], ["e"], domain="com.microsoft"),
         helper.make_node("Transpose", ["e"], ["y"], perm=[1, 0, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 4])],
        [numpy_helper.from_array(np.array(0, np.int32), "axis")])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


# --- .pt2 archives and pickles that torch.export.load would run -------------------------------

def rewrite(src: Path, dst: Path, replace: dict | None = None, add: dict | None = None) -> Path:
    """A copy of `src` with members replaced (name suffix -> bytes, or a function of the old bytes)
    and members added (name -> bytes or ZipInfo -> bytes), written with Python's zipfile."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
            zout.writestr(info, data)
        for name, data in add.items():
            zout.writestr(name, data)
    return dst


def reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol 2: GLOBAL module.name, (arg,), REDUCE - i.e. module.name(arg) when unpickled."""
    text = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(text).to_bytes(4, "little") + text
            + b"\x85R.")


def stack_global_pickle(module: str, name: str, arg: str, short: bool = False) -> bytes:
    """Protocol 4: the callable named by two strings and STACK_GLOBAL, then REDUCE. Strings as
    BINUNICODE, or as pickle.dumps writes them (SHORT_BINUNICODE) with `short`."""
    def text(s: str) -> bytes:
        if short:
            return b"\x8c" + bytes([len(s)]) + s.encode()
        return b"X" + len(s).to_bytes(4, "little") + s.encode()
    return b"\x80\x04" + text(module) + text(name) + b"\x93" + text(arg) + b"\x85R."


def swap_data_pkl(torch_save_zip: bytes, data_pkl: bytes) -> bytes:
    """A torch.save zip with its data.pkl replaced (the storages stay)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(torch_save_zip)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data_pkl if info.filename.endswith("data.pkl") else zin.read(info))
    return out.getvalue()


def planted_sample_inputs(src: Path, dst: Path, command: str) -> Path:
    """(1) The sample inputs' data.pkl replaced by os.system(command)."""
    evil = reduce_pickle("os", "system", command)
    return rewrite(src, dst, replace={"data/sample_inputs/model.pt": lambda b: swap_data_pkl(b, evil)})
