"""Every shrinking step through the public API, on both input formats (ONNX and torch.export .pt2):
the artifact loads and runs, fidelity is reported, and the figure the step exists to improve improves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.helpers import FAST, artifacts, metrics, run_job, run_onnx, run_pt2, upload_dataset, upload_model
from tests.stack import wait_job


@pytest.fixture(scope="module")
def cnn(api, digits_cnn):
    """The digits CNN uploaded in both formats, and its held-out digits."""
    data = upload_dataset(api, digits_cnn["data"])["id"]
    with np.load(digits_cnn["data"]) as d:
        feed = {"x": d["x"][:16]}
    return {fmt: upload_model(api, digits_cnn[fmt], fmt) for fmt in ("onnx", "pt2")}, data, feed


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_structured_pruning_removes_channels_on_both_formats(api, cnn, fmt):
    models, data, feed = cnn
    job, report = run_job(api, models[fmt], data, [{"prune": {"method": "structured", "ratio": 0.5}}])
    base, pruned = metrics(report, "baseline"), metrics(report, "c1")
    assert pruned["params"] < 0.5 * base["params"] and pruned["macs"] < 0.5 * base["macs"]
    assert pruned["fidelity"]["top1_agreement"] is not None and "accuracy" in pruned["quality"]
    files = artifacts(api, job)
    out = run_onnx(files["model.onnx"], feed)
    assert out.shape == (16, 10)
    if fmt == "pt2":  # the .pt2 artifact runs and computes what the ONNX one does
        assert report["candidates"][0]["artifact_pt2"] == "model.pt2"
        np.testing.assert_allclose(run_pt2(files["model.pt2"], feed), out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_quantization_modes_on_both_formats(api, cnn, fmt):
    models, data, feed = cnn
    steps = [{"quantize": {"mode": "static", "method": m}} for m in ("minmax", "entropy", "percentile")]
    job, report = run_job(api, models[fmt], data, steps[:1])
    assert report["baseline"]["metrics"]["size_bytes"] / metrics(report, "c1")["size_bytes"] >= 3.5
    assert metrics(report, "c1")["fidelity"]["top1_agreement"] >= 0.97
    ops = {n.op_type for n in onnx.load_from_string(artifacts(api, job)["model.onnx"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    floats = [{"quantize": {"mode": "float", "dtype": "fp16"}}, {"quantize": {"mode": "float", "dtype": "bf16"}}]
    for step in [*(steps[1:] if fmt == "onnx" else []), *floats]:  # calibration methods once, float modes twice
        _, r = run_job(api, models[fmt], data, [step])
        assert r["baseline"]["metrics"]["size_bytes"] / metrics(r, "c1")["size_bytes"] > 1.9
        assert metrics(r, "c1")["fidelity"]["top1_agreement"] >= 0.95


def test_static_int8_in_qoperator_format(api, cnn):
    models, data, feed = cnn
    qdq, qop = ({"quantize": {"mode": "static", "per_channel": False, "quant_format": f}} for f in ("qdq", "qoperator"))
    job, report = run_job(api, models["onnx"], data, [qop])
    _, r = run_job(api, models["onnx"], data, [qdq])
    assert metrics(report, "c1")["size_bytes"] < metrics(r, "c1")["size_bytes"]  # no DequantizeLinear per weight
    assert metrics(report, "c1")["fidelity"]["top1_agreement"] >= 0.97
    base, c1 = report["baseline"]["metrics"], metrics(report, "c1")
    assert c1["params"] == base["params"] and c1["macs"] == base["macs"]  # integer operators counted as float ones
    model = onnx.load_from_string(artifacts(api, job)["model.onnx"])
    assert {"QLinearConv", "QLinearMatMul"} & {n.op_type for n in model.graph.node}
    assert run_onnx(artifacts(api, job)["model.onnx"], feed).shape == (16, 10)


def test_int8_recipe_chooses_static_for_a_cnn_by_measurement(api, cnn):
    models, data, _ = cnn
    r = api.post("/v1/jobs", json={"model_id": models["onnx"]["id"], "dataset_id": data, "recipe": "int8",
                                              "target": FAST})
    job = wait_job(api, r.json()["id"])
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    note = next(n for n in report["candidates"][0]["notes"] if n.startswith("quantize auto chose"))
    assert "static per-tensor qoperator" in note and "dynamic" in note  # all were measured (QOperator: CPU target)
    weighed = {d["option"]: d for d in report["candidates"][0]["decisions"]}  # the same comparison, as data
    assert "static per-tensor qoperator" in weighed and sum(d["chosen"] for d in weighed.values()) == 1
    assert note.startswith(f"quantize auto chose {next(k for k, d in weighed.items() if d['chosen'])}:")
    assert report["baseline"]["metrics"]["size_bytes"] / metrics(report, "c1")["size_bytes"] >= 3.5


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_weight_sparsity_factorization_and_clustering(api, cnn, fmt):
    models, data, feed = cnn
    steps = [{"prune": {"method": "magnitude", "ratio": 0.6}}, {"cluster": {"clusters": 16}},
             {"factorize": {"rank_ratio": 0.25}}]
    job, report = run_job(api, models[fmt], data, steps)
    base, sparse, shared, low_rank = (metrics(report, c) for c in ("baseline", "c1", "c2", "c3"))
    assert sparse["nonzero_params"] < 0.45 * base["nonzero_params"]  # the classifier stays dense
    assert sparse["size_gzip_bytes"] < 0.75 * base["size_gzip_bytes"]
    assert shared["size_bytes"] < 0.4 * sparse["size_bytes"]  # uint8 codes instead of float32
    assert low_rank["params"] < shared["params"]
    files = artifacts(api, job)
    for name in ("c1.onnx", "c2.onnx", "model.onnx"):
        assert run_onnx(files[name], feed).shape == (16, 10)
    assert [c["parent_id"] for c in report["candidates"]] == ["baseline", "c1", "c2"]


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_two_of_four_sparsity_and_graph_optimization(api, cnn, fmt):
    models, data, feed = cnn
    job, report = run_job(api, models[fmt], data,
                          [{"prune": {"method": "semi_structured"}}, {"optimize_graph": {"level": "basic"}}])
    sparse = metrics(report, "c1")
    assert sparse["nonzero_params"] < 0.6 * metrics(report, "baseline")["nonzero_params"]
    weights = onnx.load_from_string(artifacts(api, job)["c1.onnx"]).graph.initializer
    # the convolutions that take 2:4 (input channels a multiple of 4): 2 zeros in every 4 inputs
    convs = [onnx.numpy_helper.to_array(t) for t in weights if len(t.dims) == 4 and t.dims[1] % 4 == 0]
    assert len(convs) == 2
    for w in convs:
        assert ((np.moveaxis(w, 1, -1).reshape(-1, 4) == 0).sum(1) >= 2).all()
    optimized = metrics(report, "c2")  # graph optimization is lossless: the same answers as its parent
    assert optimized["fidelity"]["top1_agreement"] == sparse["fidelity"]["top1_agreement"]
    assert abs(optimized["fidelity"]["cosine"] - sparse["fidelity"]["cosine"]) < 1e-5


def test_exclusion_globs_keep_layers_in_float(api, cnn):
    models, data, _ = cnn
    job, _ = run_job(api, models["onnx"], data, [{"quantize": {"mode": "static", "exclude": ["*Gemm*"]}}])
    graph = onnx.load_from_string(artifacts(api, job)["model.onnx"]).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert gemms and all(producers.get(n.input[1]) != "DequantizeLinear" for n in gemms)  # float weights
    assert convs and all(producers.get(n.input[1]) == "DequantizeLinear" for n in convs)  # int8 weights


def test_drop_layers_in_a_sequential_stack(api, digits):
    model = upload_model(api, digits[0], "onnx")  # the digits MLP: its 1024 -> 1024 block can go
    assert model["layers"] == 1
    job, report = run_job(api, model, None, [{"drop_layers": {"drop": [0]}}])
    assert metrics(report, "c1")["params"] < 0.1 * metrics(report, "baseline")["params"]
    assert run_onnx(artifacts(api, job)["model.onnx"], {"x": np.zeros((2, 64), np.float32)}).shape == (2, 10)


def test_int4_weight_only_on_matmul_weights(api, digits):
    model = upload_model(api, digits[0], "onnx")  # the digits MLP: 1.1 M MatMul weights
    job, report = run_job(api, model, None, [{"quantize": {"mode": "weight_only", "dtype": "int4"}}])
    assert report["baseline"]["metrics"]["size_bytes"] / metrics(report, "c1")["size_bytes"] >= 6
    ops = {n.op_type for n in onnx.load_from_string(artifacts(api, job)["model.onnx"]).graph.node}
    assert "MatMulNBits" in ops


def test_unsupported_step_is_refused_at_submit(api, cnn):
    models, data, _ = cnn
    r = api.post("/v1/jobs", json={"model_id": models["onnx"]["id"], "dataset_id": data,
                                              "recipe": {"steps": [{"drop_layers": {"keep_every": 2}}]}})
    assert r.status_code == 422 and r.json()["code"] == "unsupported_step"
    assert "no repeated layers" in r.json()["detail"]
    r = api.post("/v1/jobs", json={"model_id": models["onnx"]["id"],
                                              "recipe": {"steps": [{"quantize": {"mode": "static"}}]}})
    assert r.status_code == 422 and r.json()["code"] == "dataset_required"


# -- all-MiniLM-L6-v2 ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentences(api, minilm):
    with np.load(minilm["data"]) as d:
        feed = {k: d[k][:4] for k in ("input_ids", "attention_mask")}
    return upload_dataset(api, minilm["data"])["id"], feed


def test_minilm_int8_and_structured_pruning_onnx(api, minilm, sentences):
    data, feed = sentences
    model = upload_model(api, minilm["onnx"], "onnx")
    assert model["layers"] == 6 and "MatMul" in model["operators"]
    job, report = run_job(api, model, data, [{"quantize": {"mode": "auto"}}])
    assert report["baseline"]["metrics"]["size_bytes"] / metrics(report, "c1")["size_bytes"] >= 3.5
    assert metrics(report, "c1")["fidelity"]["cosine"] >= 0.99
    assert metrics(report, "c1")["fidelity"]["top1_agreement"] is None  # an embedding model, not a classifier
    chose = next(n for n in report["candidates"][0]["notes"] if n.startswith("quantize auto chose"))
    assert "fused dynamic per-channel fidelity" in chose  # the fused graph's variants were measured too
    fused_ops = {"QAttention", "SkipLayerNormalization"} & op_types(artifacts(api, job)["model.onnx"])
    assert bool(fused_ops) == chose.startswith("quantize auto chose fused")
    fidelity = {v.split(" fidelity ")[0]: float(v.split(" fidelity ")[1].split(",")[0])
                for v in chose.split(": ", 1)[1].split("; ")}
    # its activations have outliers, so SmoothQuant was tried, and keeps more than plain dynamic int8
    assert fidelity["smoothed dynamic per-channel"] > fidelity["dynamic per-channel"] + 0.002
    job, report = run_job(api, model, data, [{"quantize": {"mode": "dynamic", "smooth": {"alpha": 0.8}}}])
    notes = report["candidates"][0]["notes"]
    assert any(n.startswith("SmoothQuant alpha 0.8: 24 MatMul inputs smoothed") for n in notes)
    assert metrics(report, "c1")["fidelity"]["cosine"] > fidelity["dynamic per-channel"] + 0.002
    steps = [{"prune": {"method": "structured", "ratio": 0.5}}, {"optimize_graph": {"level": "extended"}}]
    job, report = run_job(api, model, data, steps)
    base, pruned, fused = metrics(report, "baseline"), metrics(report, "c1"), metrics(report, "c2")
    assert pruned["params"] < base["params"] and pruned["macs"] < 0.6 * base["macs"]
    assert any("heads" in n for n in report["candidates"][0]["notes"])
    fusion = next(n for n in report["candidates"][1]["notes"] if "transformer fusion" in n)
    assert "6 Attention" in fusion and float(fusion.rsplit("cosine ", 1)[1]) >= 0.9999  # pruned heads fuse too
    assert abs(fused["fidelity"]["cosine"] - pruned["fidelity"]["cosine"]) < 1e-4
    files = artifacts(api, job)
    assert ("Attention" in op_types(files["model.onnx"])) == ("applied" in fusion)  # kept only where faster
    np.testing.assert_allclose(run_onnx(files["model.onnx"], feed), run_onnx(files["c1.onnx"], feed), atol=1e-4)


def op_types(blob: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(blob).graph.node}


def test_minilm_pt2_depth_rank_and_int4(api, minilm, sentences):
    data, feed = sentences
    model = upload_model(api, minilm["pt2"], "pt2")
    assert model["format"] == "pt2" and model["layers"] == 6
    assert [i["name"] for i in model["inputs"]] == ["input_ids", "attention_mask"]
    steps = [{"drop_layers": {"keep_every": 2}}, {"factorize": {"rank_ratio": 0.5}},
             {"quantize": {"mode": "weight_only", "dtype": "int4"}}]
    job, report = run_job(api, model, data, steps, timeout=600)
    base, shallow, low_rank, int4 = (metrics(report, c) for c in ("baseline", "c1", "c2", "c3"))
    assert shallow["macs"] < 0.6 * base["macs"] and low_rank["params"] < shallow["params"]
    assert int4["size_bytes"] < low_rank["size_bytes"]
    for m in (shallow, low_rank, int4):
        assert 0 < m["fidelity"]["cosine"] <= 1.0001
    files = artifacts(api, job)
    assert {"c1.onnx", "c1.pt2", "c2.onnx", "c2.pt2", "model.onnx"} <= set(files)
    assert "model.pt2" not in files  # int4 MatMulNBits has no torch equivalent: said in the notes
    assert any("no .pt2" in n for n in report["candidates"][2]["notes"])
    np.testing.assert_allclose(run_pt2(files["c2.pt2"], feed), run_onnx(files["c2.onnx"], feed), atol=1e-4)
    assert matmul_weight_bytes(files["c2.onnx"]) / matmul_weight_bytes(files["model.onnx"]) >= 6


def matmul_weight_bytes(blob: bytes) -> int:
    """Bytes of the constant right-hand sides of MatMul / MatMulNBits (packed weights, scales, zero points)."""
    model = onnx.load_from_string(blob)
    sizes = {t.name: len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in sizes:
            total += sizes[n.input[1]]
        elif n.op_type == "MatMulNBits":
            total += sum(sizes.get(i, 0) for i in n.input[1:4])
    return total
