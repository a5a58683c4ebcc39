"""What the API tests share: uploading, submitting and reading results as a client does."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import onnxruntime as ort
import torch

from tests.stack import wait_job

FAST = {"batch_sizes": [1], "repeats": 10, "warmup": 2}


def upload(client, path, fmt: str) -> dict:
    r = client.post("/v1/models", params={"name": path.stem, "format": fmt}, content=path.read_bytes())
    assert r.status_code == 201, r.text
    return r.json()


def dataset(client, path) -> str:
    r = client.post("/v1/datasets", content=path.read_bytes())
    assert r.status_code == 201, r.text
    return r.json()["id"]


def run_job(client, model: dict, data_id: str | None, steps: list[dict], timeout: float = 300) -> tuple[dict, dict]:
    r = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data_id,
                                      "recipe": {"steps": steps, "target": FAST}})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], timeout=timeout)
    assert job["status"] == "succeeded", job
    return job, client.get(f"/v1/jobs/{job['id']}/report").json()


def artifacts(client, job: dict) -> dict[str, bytes]:
    links = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    return {a["name"]: httpx.get(a["url"], timeout=60).content for a in links}


def run_onnx(blob: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def run_pt2(blob: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    program = torch.export.load(io.BytesIO(blob))
    with torch.no_grad():
        return program.module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()


def metrics(report: dict, cid: str) -> dict:
    if cid == "baseline":
        return report["baseline"]["metrics"]
    return next(c for c in report["candidates"] if c["id"] == cid)["metrics"]


def submit(api, model, data, recipe, timeout=600, target=FAST) -> tuple[dict, dict]:
    r = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": recipe, "target": target})
    assert r.status_code == 202, r.text
    job = wait_job(api, r.json()["id"], timeout=timeout)
    assert job["status"] == "succeeded", job
    return job, api.get(f"/v1/jobs/{job['id']}/report").json()


def candidate(report: dict, steps: list[str]) -> dict:
    return next(c for c in report["candidates"] if [next(iter(s)) for s in c["steps"]] == steps)


def wait_until(api, job_id, predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never matched: {job}")


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
