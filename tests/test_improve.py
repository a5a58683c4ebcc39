"""Improve and grow through the public API: distillation, fine-tuning with augmentation, QAT, growth and
the survey's two strategies on the digits CNN (real labels) and all-MiniLM-L6-v2 (real sentences)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import onnx
import pytest

from tests.helpers import artifacts, candidate, npz_bytes, submit, upload_dataset, upload_model, wait_until
from tests.stack import wait_job


def test_shrink_and_improve_recovers_what_the_shrink_lost(api, digits_job):
    model, data = digits_job
    job, report = submit(api, model, data, "shrink-and-improve")
    base = report["baseline"]["metrics"]
    final = candidate(report, ["prune", "distill", "quantize"])
    plain = candidate(report, ["prune", "quantize"])  # the same shrink without the improvement
    assert report["recommended"] == final["id"] and final["artifact"] == "model.onnx"
    assert plain["parent_id"] == candidate(report, ["prune"])["id"]  # the shared prefix was made once
    assert len(report["candidates"]) == 4
    m = final["metrics"]
    assert m["quality"]["accuracy"] >= base["quality"]["accuracy"] - 0.01
    assert base["size_bytes"] / m["size_bytes"] >= 3 and base["macs"] / m["macs"] >= 3
    assert plain["metrics"]["quality"]["accuracy"] < m["quality"]["accuracy"] - 0.02
    assert set(m["quality"]) == {"accuracy", "macro_f1"} and "accuracy" in final["vs_baseline"]["quality_delta"]
    choice = next(n for n in final["notes"] if n.startswith("quantize auto"))  # int8 or the float model, timed
    assert "float (not quantized) fidelity 1.0000" in choice and "static per-tensor" in choice
    assert report["measurement"]["samples"] == 450 and report["measurement"]["train_samples"] == 1347


def test_grow_improve_and_shrink_keeps_size_and_gains_quality(api, digits_job):
    model, data = digits_job
    job, report = submit(api, model, data, "grow-improve-and-shrink")
    base = report["baseline"]["metrics"]
    grown = candidate(report, ["grow"])["metrics"]
    assert grown["params"] > 1.5 * base["params"]
    assert grown["fidelity"]["top1_agreement"] == 1.0 and grown["fidelity"]["cosine"] > 0.99999  # same function
    final = candidate(report, ["grow", "finetune", "prune", "distill", "quantize"])["metrics"]
    assert final["size_bytes"] <= base["size_bytes"]
    assert final["quality"]["accuracy"] >= base["quality"]["accuracy"]


def test_qat_ends_in_int8_and_augmented_finetuning(api, digits_job):
    model, data = digits_job
    augment = {"noise": 0.05, "mixup": 0.2, "flip": False, "crop_padding": 1}
    recipe = {"steps": [{"prune": {"method": "structured", "ratio": 0.5}},
                        {"finetune": {"epochs": 4, "augment": augment, "optimizer": "adam", "schedule": "linear"}},
                        {"qat": {"epochs": 3, "lr": 0.0005}}],
              "data": {"quality": ["accuracy", "top3_accuracy", "macro_f1"]}}
    job, report = submit(api, model, data, recipe)
    pruned, tuned, int8 = (candidate(report, s)["metrics"] for s in (["prune"], ["prune", "finetune"],
                                                                     ["prune", "finetune", "qat"]))
    assert tuned["quality"]["accuracy"] > pruned["quality"]["accuracy"]
    assert int8["quality"]["accuracy"] >= tuned["quality"]["accuracy"] - 0.02
    assert int8["quality"]["top3_accuracy"] >= int8["quality"]["accuracy"]
    ops = {n.op_type for n in onnx.load_from_string(artifacts(api, job)["model.onnx"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_training_is_deterministic_given_a_seed(api, digits_job):
    model, data = digits_job
    recipe = {"steps": [{"prune": {"method": "structured", "ratio": 0.5}}, {"distill": {"epochs": 2}}],
              "data": {"seed": 7}}
    digests = [hashlib.sha256(artifacts(api, submit(api, model, data, recipe)[0])["model.onnx"]).hexdigest()
               for _ in range(2)]
    assert digests[0] == digests[1]


def test_training_reports_epochs_and_stops_when_cancelled(api, digits_job):
    model, data = digits_job
    recipe = {"steps": [{"finetune": {"epochs": 500}}]}
    job = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": recipe}).json()
    seen = wait_until(api, job["id"], lambda j: "epoch" in j["progress"]["message"])
    assert seen["status"] == "running" and "finetune: epoch" in seen["progress"]["message"]
    assert 0.1 <= seen["progress"]["fraction"] < 0.8  # baseline measured, its one candidate in the making
    api.post(f"/v1/jobs/{job['id']}/cancel")
    done = wait_job(api, job["id"], timeout=60)
    assert done["status"] == "cancelled"


@pytest.mark.slow
def test_minilm_half_depth_student_learns_from_the_teacher(api, minilm):
    model = upload_model(api, minilm["onnx"], "onnx")
    data = upload_dataset(api, minilm["all"])["id"]  # 256 real sentences: 205 to train on, 51 held out
    recipe = {"steps": [{"drop_layers": {"keep_every": 2}},
                        {"distill": {"epochs": 1, "lr": 0.0001, "batch_size": 16, "freeze": ["*embeddings*"]}}]}
    job, report = submit(api, model, data, recipe, timeout=900)
    shallow, distilled = candidate(report, ["drop_layers"]), candidate(report, ["drop_layers", "distill"])
    assert distilled["metrics"]["fidelity"]["cosine"] > shallow["metrics"]["fidelity"]["cosine"] + 0.05
    assert distilled["metrics"]["macs"] == shallow["metrics"]["macs"] < 0.6 * report["baseline"]["metrics"]["macs"]


# -- bad datasets ---------------------------------------------------------------------------------------------
def test_bad_dataset_files_are_refused_at_upload(api, digits_cnn):
    good = digits_cnn["all"].read_bytes()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npz_member(np.zeros((50_000, 1, 8, 8), np.float32)))
    for body, code in [(good[: len(good) // 2], "invalid_dataset"), (b"not a zip", "invalid_dataset"),
                       (npz_bytes(x=np.array([{"a": 1}, None], dtype=object)), "invalid_dataset"),
                       (bomb.getvalue(), "invalid_dataset")]:
        r = api.post("/v1/datasets", content=body)
        assert r.status_code == 422 and r.json()["code"] == code, r.text


def npz_member(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("arrays, fragment", [
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "no array named 'x'"),
    ({"x": np.zeros((4, 1, 7, 7), np.float32)}, "needs 8"),
    ({"x": np.zeros((4, 64), np.float32)}, "dimensions"),
    ({"x": np.zeros((4, 1, 8, 8), np.int64)}, "takes float32"),
])
def test_dataset_that_does_not_fit_the_model_is_422_and_nothing_queued(api, digits_job, arrays, fragment):
    model, _ = digits_job
    r = api.post("/v1/datasets", content=npz_bytes(**arrays))
    assert r.status_code == 201, r.text
    before = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    r = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": r.json()["id"], "recipe": "int8"})
    assert r.status_code == 422 and r.json()["code"] == "dataset_mismatch" and fragment in r.json()["detail"]
    assert api.get("/v1/jobs", params={"limit": 100}).json()["items"] == before


def test_labels_are_required_where_a_step_learns_from_them(api, digits_job):
    model, _ = digits_job
    unlabeled = api.post("/v1/datasets", content=npz_bytes(x=np.zeros((8, 1, 8, 8), np.float32))).json()
    r = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": unlabeled["id"],
                                   "recipe": "grow-improve-and-shrink"})
    assert r.status_code == 422 and "labels" in r.json()["detail"]
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "shrink-and-improve"})
    assert r.status_code == 422 and r.json()["code"] == "dataset_required"
    assert api.get("/healthz").status_code == 200  # and the service keeps serving
