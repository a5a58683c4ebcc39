"""The engine's pure parts: data splits, quality metrics, augmentation, ONNX <-> torch, channel groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from core.assets import TensorSpec
from core.errors import InvalidDataset
from core.recipe import Recipe
from core.settings import Settings
from core.steps.grow import Grow
from core.steps.prune import Prune
from core.steps.training import Augment
from workers.engine.data import job_data
from workers.graph.torch_module import OnnxModule
from workers.measure.quality import macro_f1, quality
from workers.steps import apply_step
from workers.steps.context import ModelHandle, StepContext
from workers.training.augment import augment

SPECS = [TensorSpec(name="x", dtype="float32", shape=["batch", 1, 6, 6])]


def cnn(path: Path) -> Path:
    """Conv(1->4) Relu MaxPool Conv(4->6) Relu Flatten Gemm(54->5) Relu Gemm(5->3): every kind of group."""
    rng = np.random.default_rng(0)
    w = lambda *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5)  # noqa: E731
    inits = []
    for name, shape in [("c1.w", (4, 1, 3, 3)), ("c1.b", (4,)), ("c2.w", (6, 4, 3, 3)), ("c2.b", (6,)),
                        ("f1.w", (5, 54)), ("f1.b", (5,)), ("f2.w", (3, 5)), ("f2.b", (3,))]:
        t = w(*shape)
        t.name = name
        inits.append(t)
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="r1"),
        helper.make_node("MaxPool", ["b"], ["c"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["c", "c2.w", "c2.b"], ["d"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["e"], name="r2"),
        helper.make_node("Flatten", ["e"], ["f"], name="fl"),
        helper.make_node("Gemm", ["f", "f1.w", "f1.b"], ["g"], name="f1", transB=1),
        helper.make_node("Relu", ["g"], ["h"], name="r3"),
        helper.make_node("Gemm", ["h", "f2.w", "f2.b"], ["y"], name="f2", transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def context(tmp_path: Path, n: int = 16) -> StepContext:
    x = np.random.default_rng(1).standard_normal((n, 1, 6, 6)).astype(np.float32)
    data = job_data(None, SPECS, Recipe.model_validate({"steps": [{"quantize": {}}]}))
    data.train.inputs["x"] = data.eval.inputs["x"] = x
    return StepContext(workdir=tmp_path / "work", settings=Settings(), inputs=SPECS, data=data)


def test_structured_pruning_and_growth_keep_the_graph_valid(tmp_path):
    src = cnn(tmp_path / "m.onnx")
    ctx = context(tmp_path)
    x = ctx.samples.inputs["x"]
    pruned = apply_step(ModelHandle(src), Prune(method="structured", ratio=0.5), ctx).onnx_path
    assert run(pruned, x).shape == (16, 3)
    widths = {t.name: list(t.dims) for t in onnx.load(str(pruned)).graph.initializer}
    assert widths["c1.w"][0] == 2 and widths["c2.w"] == [3, 2, 3, 3] and widths["f1.w"] == [2, 27]
    grown = apply_step(ModelHandle(src), Grow(width_multiplier=2.0, depth_multiplier=2.0), ctx).onnx_path
    np.testing.assert_allclose(run(grown, x), run(src, x), rtol=1e-4, atol=1e-5)  # the same function
    assert sum(np.prod(t.dims) for t in onnx.load(str(grown)).graph.initializer) > 2 * sum(
        np.prod(t.dims) for t in onnx.load(str(src)).graph.initializer)


def test_onnx_module_matches_onnxruntime_and_writes_weights_back(tmp_path):
    src = cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((5, 1, 6, 6)).astype(np.float32)
    model = onnx.load(str(src))
    module = OnnxModule(model)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), run(src, x), rtol=1e-5, atol=1e-5)
        module.parameter_for("f2.b").add_(1.0)
    out = tmp_path / "changed.onnx"
    onnx.save(module.to_onnx(model), out)
    np.testing.assert_allclose(run(out, x), run(src, x) + 1.0, rtol=1e-5, atol=1e-5)


def test_splits_are_deterministic_and_follow_the_recipe(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1).repeat(36, 1).reshape(100, 1, 6, 6),
             labels=np.arange(100) % 3)
    trains = Recipe.model_validate({"steps": [{"distill": {}}], "data": {"seed": 3}})
    a, b = job_data(path, SPECS, trains), job_data(path, SPECS, trains)
    assert len(a.eval) == 20 and len(a.train) == 80 and a.task == "classification"
    np.testing.assert_array_equal(a.eval.labels, b.eval.labels)
    assert not set(a.eval.inputs["x"][:, 0, 0, 0]) & set(a.train.inputs["x"][:, 0, 0, 0])
    quantizes = job_data(path, SPECS, Recipe.model_validate({"steps": [{"quantize": {}}]}))
    assert len(quantizes.eval) == 100  # nothing trains: every sample is evaluated
    split = np.zeros(100, np.int64)
    split[:10] = 1
    np.savez(path, x=np.zeros((100, 1, 6, 6), np.float32), split=split)
    assert len(job_data(path, SPECS, trains).eval) == 10
    np.savez(path, x=np.zeros((100, 1, 6, 6), np.float32), split=np.zeros(100, np.int64))
    with pytest.raises(InvalidDataset):
        job_data(path, SPECS, trains)


def test_quality_metrics():
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1]])
    labels = np.array([0, 1, 1, 2])
    q = quality(logits, labels, ["accuracy", "top2_accuracy", "macro_f1"])
    assert q["accuracy"] == 0.5 and q["top2_accuracy"] == 1.0
    assert abs(q["macro_f1"] - macro_f1(np.array([0, 1, 2, 0]), labels)) < 1e-12
    reg = quality(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), ["mse", "mae", "cosine"])
    assert reg == {"mse": 0.5, "mae": 0.5, "cosine": 0.5}
    assert quality(logits, None, ["accuracy"]) == {}


def test_augmentation_is_seeded_and_masks_only_tokens():
    batch = {"x": torch.ones(8, 1, 6, 6), "input_ids": torch.full((8, 10), 7),
             "attention_mask": torch.ones(8, 10, dtype=torch.int64)}
    a = Augment(noise=0.1, flip=True, crop_padding=1, token_mask=0.5, mixup=0.4)
    out1, perm1, keep1 = augment(batch, a, torch.Generator().manual_seed(0))
    out2, perm2, keep2 = augment(batch, a, torch.Generator().manual_seed(0))
    assert torch.equal(out1["x"], out2["x"]) and torch.equal(perm1, perm2) and keep1 == keep2
    assert out1["x"].shape == (8, 1, 6, 6)
    assert (out1["input_ids"] == 103).any() and torch.equal(out1["attention_mask"], batch["attention_mask"])
