"""Graphs shaped like third-party exports (tests/graphs.py) through the public API: each gets a result or a
documented error, never `internal_error`, and never a recommendation the uploaded model beats."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests import graphs
from tests.helpers import artifacts, problem, run_onnx, submit, upload_model

FAST = {"batch_sizes": [1, 4], "repeats": 10, "warmup": 2}


def test_paddle_style_weights_in_constant_nodes_are_normalized_and_quantized(api, tmp_path):
    """Weights in Constant nodes, BatchNormalization unfolded, opset 11: normalized first (and said so), then
    int8 makes the file smaller and keeps the outputs (static int8 calibrated on generated inputs)."""
    model = upload_model(api, graphs.paddle_like_cnn(tmp_path / "paddle.onnx"))
    job, report = submit(api, model, None, "int8", target=FAST)
    normalization = report["normalization"]
    assert normalization["changed"] and normalization["already_quantized"] is None
    said = " ".join(normalization["notes"])
    assert "Constant" in said and "BatchNormalization folded" in said and "opset 11 raised to 13" in said
    best = next(c for c in report["candidates"] if c["id"] == report["recommended"])
    assert best["metrics"]["size_bytes"] < 0.5 * report["baseline"]["metrics"]["size_bytes"]
    assert best["metrics"]["fidelity"]["cosine"] >= 0.98
    assert any("synthetic inputs" in n for n in best["notes"])  # static int8 without a dataset says so
    files = artifacts(api, job)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run_onnx(files["model.onnx"], {"x": x}).shape == (2, 10)
    assert report["measurement"]["side_by_side_rounds"] > 0
    assert all(lat["spread"] is not None for lat in report["baseline"]["metrics"]["latency_ms"].values())


def test_a_state_input_without_a_batch_axis_is_fed_whole(api, tmp_path):
    """`input: [batch, 16]` beside the state `h: [1, 1, 8]`: h is never stacked to the batch size."""
    model = upload_model(api, graphs.stateful(tmp_path / "stateful.onnx"))
    specs = {s["name"]: s for s in model["inputs"]}
    assert specs["input"]["batched"] and not specs["h"]["batched"]
    job, report = submit(api, model, None, "int8", target=FAST)
    assert set(report["baseline"]["metrics"]["latency_ms"]) == {"1", "4"}
    for c in report["candidates"]:
        assert c["metrics"]["fidelity"]["cosine"] >= 0.98


def test_integer_inputs_stay_inside_the_table_they_index(api, tmp_path):
    """Byte values into a 257-row table: generated inputs within [0, 257) (above it the model fails)."""
    model = upload_model(api, graphs.byte_embedding(tmp_path / "bytes.onnx"))
    assert model["inputs"][0]["value_range"] == [0, 257]
    job, report = submit(api, model, None, "int8", target=FAST)
    assert report["candidates"]


def test_an_already_quantized_model_is_not_quantized_again(api, tmp_path):
    """int8 on a dynamically quantized graph is refused at submit, saying so; fp16 of its float parts runs, and
    the report says the graph came quantized."""
    model = upload_model(api, graphs.already_quantized(tmp_path / "q.onnx"))
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": FAST})
    assert problem(r, 422, "unsupported_step") and "already quantized (DynamicQuantizeLinear, MatMulInteger)" in r.text
    job, report = submit(api, model, None, {"steps": [{"quantize": {"mode": "float", "dtype": "bf16"}}]},
                         target=FAST)
    assert "MatMulInteger" in report["normalization"]["already_quantized"]


def test_a_batch_fixed_by_the_graph_is_measured_at_that_batch_only(api, tmp_path):
    model = upload_model(api, graphs.paddle_like_cnn(tmp_path / "fixed.onnx", batch=1))
    job, report = submit(api, model, None, "int8", target=FAST)
    assert set(report["baseline"]["metrics"]["latency_ms"]) == {"1"}
    assert any("fixed at 1" in n for n in report["baseline"]["notes"])
    assert report["normalization"]["changed"]  # checked against the upload one sample at a time


@pytest.mark.parametrize("recipe", ["fp16", "int4-weight-only"])
def test_other_recipes_on_a_paddle_style_graph_succeed_or_say_why(api, tmp_path, recipe):
    model = upload_model(api, graphs.paddle_like_cnn(tmp_path / "paddle.onnx"))
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": recipe, "target": FAST})
    if r.status_code == 422:  # refused at submit with a documented code
        assert r.json()["code"] != "internal_error"
        return
    from tests.stack import wait_job

    job = wait_job(api, r.json()["id"], timeout=600)
    assert job["status"] == "succeeded" or job["error"]["code"] != "internal_error", job
    if job["status"] == "succeeded":
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        best = report["recommended"]
        assert best == "baseline" or next(c for c in report["candidates"] if c["id"] == best)["vs_baseline"]


def test_normalization_keeps_what_the_model_computes(tmp_path):
    """The normalized graph computes what the uploaded one does (the check that keeps the original otherwise)."""
    from core.checks.model import inspect_onnx
    from workers.engine.data import generate
    from workers.graph.normalize import _normalize

    src = graphs.paddle_like_cnn(tmp_path / "p.onnx")
    _, inputs, _ = inspect_onnx(src)
    samples = generate(inputs, {}, 8)
    done = _normalize(src, tmp_path / "n.onnx", samples)
    assert done["changed"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "n.onnx")).graph.node}
    assert not ops & {"Constant", "BatchNormalization", "Identity"}
    feed = samples.feed(slice(0, 8))
    np.testing.assert_allclose(run_onnx((tmp_path / "n.onnx").read_bytes(), feed), run_onnx(src.read_bytes(), feed),
                               rtol=1e-4, atol=1e-5)


def test_input_shapes_that_do_not_fit_the_model_are_refused_at_submit(api, tmp_path):
    model = upload_model(api, graphs.stateful(tmp_path / "s.onnx"))
    for shapes, said in [({"input": [1, 16, 3]}, "has 3 dimensions"), ({"h": [1, 2, 8]}, "fixes it at 1"),
                         ({"nope": [1]}, "not a model input")]:
        r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                       "target": {**FAST, "input_shapes": shapes}})
        assert said in problem(r, 422, "input_shapes_mismatch")["detail"]
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                   "target": {**FAST, "input_shapes": {"input": [7, 16], "h": [1, 1, 8]}}})
    assert r.status_code == 202, r.text


def test_integer_inputs_of_unknown_range_ask_for_a_dataset(api, tmp_path):
    model = upload_model(api, graphs.integer_features(tmp_path / "counts.onnx"))
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": FAST})
    assert "['counts']" in problem(r, 422, "dataset_required")["detail"]
