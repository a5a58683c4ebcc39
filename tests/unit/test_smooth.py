"""SmoothQuant (workers/graph/smooth.py): the smoothed graph computes the same, its activations' outlier ratio
falls, the division goes into the LayerNormalization where nothing else reads it and into one Mul otherwise,
and dynamic int8 of the smoothed graph keeps more of the model than dynamic int8 of the original."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from core.steps.quantize import Quantize
from tests import graphs
from workers.engine.data import Split
from workers.graph import smooth as S
from workers.graph.onnx_graph import Graph
from workers.steps.quantize import dynamic

CPU = ["CPUExecutionProvider"]


def _samples(n: int = 24) -> Split:
    return Split({"x": np.random.default_rng(0).standard_normal((n, 16, 64)).astype(np.float32)})


def _run(path, samples: Split) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=CPU).run(None, samples.feed(slice(None)))[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())


@pytest.mark.parametrize("post_norm", [False, True])
def test_smoothing_keeps_the_computation_and_flattens_the_outliers(tmp_path, post_norm):
    src = graphs.outlier_block(tmp_path / "block.onnx", post_norm=post_norm)
    found = {g.matmuls[0].name: g for g in S.groups(Graph.load(src))}
    assert set(found) == {"fc1", "fc2"}
    assert (found["fc1"].norm is not None) is (not post_norm)  # post-norm: the residual reads the LayerNorm too
    assert found["fc2"].norm is None
    samples = _samples()
    ranges = S.channel_ranges(src, [g.tensor for g in found.values()], samples, CPU)
    result = S.smooth(src, tmp_path / "smoothed.onnx", ranges, alpha=0.8)
    assert result.before["fc1"] > 20 and result.after["fc1"] < result.before["fc1"] / 4
    assert S.outputs_agree(src, result.path, samples, CPU) > 0.99999
    muls = [n for n in onnx.load(str(result.path)).graph.node if n.op_type == "Mul"]
    assert len(muls) == (2 if post_norm else 1)  # fc2's input always; fc1's only where the norm cannot take it


def test_int8_of_the_smoothed_graph_keeps_more(tmp_path):
    src = graphs.outlier_block(tmp_path / "block.onnx", post_norm=True)
    samples = _samples()
    ranges = S.channel_ranges(src, [g.tensor for g in S.groups(Graph.load(src))], samples, CPU)
    smoothed = S.smooth(src, tmp_path / "smoothed.onnx", ranges, alpha=0.8).path
    p = Quantize(mode="dynamic")
    plain, better = (dynamic(path, tmp_path / f"{name}.int8.onnx", p) for name, path in
                     (("plain", src), ("smoothed", smoothed)))
    reference = _run(src, samples)
    before, after = _cosine(reference, _run(plain, samples)), _cosine(reference, _run(better, samples))
    assert after > before and 1 - after < (1 - before) / 2


def test_smooth_is_an_int8_option():
    assert Quantize(mode="auto", smooth={"alpha": 0.6}).smooth.alpha == 0.6
    assert Quantize(mode="dynamic", smooth={}).smooth.alpha is None
    for bad in ({"mode": "weight_only", "smooth": {}}, {"mode": "float", "smooth": {}},
                {"mode": "dynamic", "smooth": {"alpha": 1.5}}, {"mode": "dynamic", "smooth": {"alfa": 0.5}}):
        with pytest.raises(ValidationError):
            Quantize(**bad)
