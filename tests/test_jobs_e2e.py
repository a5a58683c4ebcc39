"""The whole path through the public API: upload, submit, poll, report, download through S3."""

from __future__ import annotations

import hashlib
import json

import boto3
import httpx
import numpy as np
import onnx
import onnxruntime as ort

from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from tests.helpers import upload_dataset, upload_model
from tests.stack import wait_job
from workers.measure.stats import count_params


def run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {"x": x})[0]


def test_int8_end_to_end(client, digits, services):
    model_path, data_path = digits
    model = upload_model(client, model_path)
    assert model["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 64], "batched": True,
                                "value_range": None}]
    assert [(o["name"], o["dtype"], o["shape"]) for o in model["outputs"]] == [("logits", "float32", ["batch", 10])]
    assert model["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    dataset = upload_dataset(client, data_path)
    assert {a["name"] for a in dataset["arrays"]} == {"x", "labels"}

    r = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": "int8",
                                      "target": {"batch_sizes": [1, 8], "repeats": 20}})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["fraction"] == 1.0 and job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]

    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    artifacts = {a["name"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert set(artifacts) == {"model.onnx", "report.json", "report.html"}
    assert report["recommended"] == "c1"
    candidate = report["candidates"][0]
    assert candidate["artifact"] == "model.onnx" and candidate["parent_id"] == "baseline"

    # the artifact, downloaded through the presigned URL with no API key
    blob = httpx.get(artifacts["model.onnx"]["url"], timeout=30).content
    assert hashlib.sha256(blob).hexdigest() == artifacts["model.onnx"]["sha256"]
    assert len(blob) == artifacts["model.onnx"]["size_bytes"] == candidate["metrics"]["size_bytes"]
    original = model_path.stat().st_size
    assert report["baseline"]["metrics"]["size_bytes"] == original
    assert original / len(blob) >= 3.5
    assert abs(candidate["vs_baseline"]["size_ratio"] - len(blob) / original) < 1e-9

    # it runs, and agrees with the original on the held-out digits
    data = np.load(data_path)
    x, labels = data["x"], data["labels"]
    ours = run(ort.InferenceSession(blob, providers=["CPUExecutionProvider"]), x)
    theirs = run(ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]), x)
    cosine = np.mean(np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)))
    assert cosine > 0.99
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) > 0.98

    # the report's numbers are the ones we measure ourselves
    m = candidate["metrics"]
    assert m["params"] == count_params(onnx.load_from_string(blob))[0] == report["baseline"]["metrics"]["params"]
    assert abs(m["quality"]["accuracy"] - np.mean(ours.argmax(1) == labels)) < 1e-9
    assert abs(report["baseline"]["metrics"]["quality"]["accuracy"] - np.mean(theirs.argmax(1) == labels)) < 1e-9
    assert abs(m["fidelity"]["cosine"] - cosine) < 1e-4
    assert abs(m["fidelity"]["top1_agreement"] - np.mean(ours.argmax(1) == theirs.argmax(1))) < 1e-9
    assert set(m["latency_ms"]) == {"1", "8"}
    for lat in m["latency_ms"].values():
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert report["measurement"] == {**report["measurement"], "warmup": 10, "repeats": 20, "threads": 1,
                                     "inputs": "dataset", "samples": len(x)}
    assert report["environment"]["versions"]["onnxruntime"] == ort.__version__

    # the durable manifest in S3 says the same as the API
    s3 = boto3.client("s3", endpoint_url=services[1], aws_access_key_id=DEV_S3_ACCESS_KEY,
                      aws_secret_access_key=DEV_S3_SECRET_KEY, region_name="us-east-1")
    manifest = json.loads(s3.get_object(Bucket="pareto", Key=f"tenant-a/jobs/{job['id']}/job.json")["Body"].read())
    assert manifest["status"] == "succeeded" and manifest["tenant"] == "tenant-a"
    assert manifest["finished_at"] and len(manifest["artifacts"]) == 3


def test_model_without_dataset_uses_generated_inputs(client, digits):
    model = upload_model(client, digits[0], name="no-data")
    r = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"})
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["measurement"]["inputs"] == "generated"
    assert report["candidates"][0]["metrics"]["quality"] == {}
    assert report["candidates"][0]["metrics"]["fidelity"]["cosine"] > 0.99


def test_models_are_listed_read_and_deleted(client, digits):
    model = upload_model(client, digits[0], name="to-delete")
    assert model["id"] in [m["id"] for m in client.get("/v1/models").json()]
    assert client.get(f"/v1/models/{model['id']}").json() == model
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert client.get(f"/v1/models/{model['id']}").status_code == 404
    assert model["id"] not in [m["id"] for m in client.get("/v1/models").json()]


def test_jobs_are_listed_newest_first_with_a_cursor(client, digits):
    model = upload_model(client, digits[0], name="listing")
    ids = [client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert rest["items"][0]["id"] == ids[0]
    for job_id in ids:
        wait_job(client, job_id)
    done = client.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()["items"]
    assert set(ids) <= {j["id"] for j in done}


def test_catalog(client):
    recipes = {r["name"]: r for r in client.get("/v1/recipes").json()}
    assert "int8" in recipes and recipes["int8"]["description"]
    assert client.get("/v1/recipes/int8").json() == recipes["int8"]
    assert client.get("/v1/recipes/nope").status_code == 404
    steps = {s["name"]: s for s in client.get("/v1/steps").json()}
    assert steps["quantize"]["schema"]["properties"]["mode"]
    assert "step" not in steps["quantize"]["schema"]["properties"]


def test_health(stack):
    assert httpx.get(f"{stack.api_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.api_url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "s3": "ok"}
