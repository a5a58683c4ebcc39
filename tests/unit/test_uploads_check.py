"""The gateway's checks of uploaded files, before anything loads them."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from core.checks.dataset import inspect_npz
from core.checks.model import inspect_onnx
from core.errors import InvalidDataset, InvalidModel


def tiny_model(**kw) -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], **kw)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inputs_and_outputs_are_read(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(), path)
    _, inputs, outputs = inspect_onnx(path)
    assert inputs[0].model_dump() == {"name": "x", "dtype": "float32", "shape": ["n", 3], "batched": True,
                                      "value_range": None}
    assert outputs[0].name == "y"


def test_external_data_is_refused(tmp_path):
    model = tiny_model()
    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("float_data")
    t.external_data.add(key="location", value="../../etc/passwd")
    model.graph.initializer.append(t)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModel) as e:
        inspect_onnx(path)
    assert e.value.code == "external_data"


def test_checker_failures_are_reported(tmp_path):
    model = tiny_model()
    model.graph.node[0].op_type = "NoSuchOp"
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModel, match="checker"):
        inspect_onnx(path)


def npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_npz_arrays_are_described_without_loading(tmp_path):
    arrays, _ = inspect_npz(npz(tmp_path, x=np.zeros((5, 3), np.float32), labels=np.arange(5)), 10**9)
    assert {a.name: (a.dtype, a.shape) for a in arrays} == {"x": ("float32", [5, 3]), "labels": ("int64", [5])}


def test_npz_with_pickles_is_refused(tmp_path):
    with pytest.raises(InvalidDataset, match="pickles"):
        inspect_npz(npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object)), 10**9)


def test_npz_with_mismatched_samples_is_refused(tmp_path):
    with pytest.raises(InvalidDataset, match="first"):
        inspect_npz(npz(tmp_path, x=np.zeros((5, 3)), labels=np.zeros(4)), 10**9)


def test_zip_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros((20_000, 1000), np.float32))  # 80 MB of zeros compresses ~1000x
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue())
    with pytest.raises(InvalidDataset, match="bomb"):
        inspect_npz(path, 10**10)


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"hello")
    with pytest.raises(InvalidDataset, match="zip"):
        inspect_npz(path, 10**9)
