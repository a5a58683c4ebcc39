"""Efficient layers and learning from unlabeled data, through the public API on the digits CNN."""

from __future__ import annotations

from tests.helpers import candidate, submit, upload_dataset, upload_model


def test_efficient_layers_and_distill(api, digits_job):
    model, data = digits_job
    job, report = submit(api, model, data, "efficient-layers-and-distill")
    base = report["baseline"]["metrics"]
    swapped = candidate(report, ["swap_layers"])
    recovered = candidate(report, ["swap_layers", "distill"])["metrics"]
    assert recovered["macs"] < 0.5 * base["macs"] and recovered["params"] < base["params"]
    assert recovered["quality"]["accuracy"] >= base["quality"]["accuracy"] - 0.015
    drop = swapped["metrics"]["quality"]["accuracy"]  # the report shows what the swap alone cost
    assert drop < recovered["quality"]["accuracy"] - 0.2 and swapped["metrics"]["fidelity"]["cosine"] < 0.99
    assert any("depthwise-separable" in n for n in swapped["notes"])


def test_semi_supervised_finetuning_beats_supervised_on_ten_percent(api, digits_job):
    model, data = digits_job
    tune = {"epochs": 10, "lr": 0.002, "labeled_fraction": 0.1}
    prune = {"prune": {"method": "structured", "ratio": 0.5}}
    _, supervised = submit(api, model, data, {"steps": [prune, {"finetune": tune}], "data": {"seed": 1}})
    semi = {**tune, "pseudo_labels": True, "consistency": 1.0}
    _, semisupervised = submit(api, model, data, {"steps": [prune, {"finetune": semi}], "data": {"seed": 1}})
    a = candidate(supervised, ["prune", "finetune"])
    b = candidate(semisupervised, ["prune", "finetune"])
    assert "135 of them labeled" in " ".join(a["notes"]) and "135 of them labeled" in " ".join(b["notes"])
    assert b["metrics"]["quality"]["accuracy"] > a["metrics"]["quality"]["accuracy"]


def test_unsupported_layers_and_unlabeled_tasks_are_refused_at_submit(api, digits, minilm):
    mlp = upload_model(api, digits[0], "onnx")  # Gemm layers only: no convolution to swap
    r = api.post("/v1/jobs", json={"model_id": mlp["id"], "recipe": {"steps": [
        {"swap_layers": {"conv": "depthwise_separable", "linear": "keep"}}]}})
    assert r.status_code == 422 and r.json()["code"] == "unsupported_step" and "Conv" in r.json()["detail"]
    encoder = upload_model(api, minilm["onnx"], "onnx")  # an embedding model: no class labels to pseudo-label
    sentences = upload_dataset(api, minilm["data"])["id"]
    r = api.post("/v1/jobs", json={"model_id": encoder["id"], "dataset_id": sentences, "recipe": {"steps": [
        {"distill": {"pseudo_labels": True}}]}})
    assert r.status_code == 422 and r.json()["code"] == "dataset_mismatch" and "labels" in r.json()["detail"]
