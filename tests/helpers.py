"""What the API tests share: uploading, submitting and reading results as a client does."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from tests.stack import wait_job

FAST = {"batch_sizes": [1], "repeats": 10, "warmup": 2}


# Enough timed runs that a job lasts a few seconds on this machine.
SLOW_TARGET = {"batch_sizes": [64], "repeats": 2500, "warmup": 5}


def upload_model(client, path, fmt: str = "onnx", name: str | None = None) -> dict:
    r = client.post("/v1/models", params={"name": name or path.stem, "format": fmt}, content=path.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return r.json()


def upload_dataset(client, path) -> dict:
    """As a multipart form, the way browsers and most clients send files."""
    r = client.post("/v1/datasets", files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()


def problem(r: httpx.Response, status: int, code: str) -> dict:
    """The body of a problem+json answer with this status and code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["title"] and body["detail"]
    return body


def refused_upload(client, content: bytes, code: str, fmt: str = "onnx", path: str = "/v1/models") -> dict:
    """An upload refused with 422 and `code`, in bounded time, and nothing listed."""
    before = {m["id"] for m in client.get(path).json()}
    started = time.monotonic()
    params = {"format": fmt} if path == "/v1/models" else {}
    body = problem(client.post(path, params=params, content=content), 422, code)
    assert time.monotonic() - started < 60
    assert {m["id"] for m in client.get(path).json()} == before
    return body


def relu_model(nodes: int = 1) -> onnx.ModelProto:
    """x [n, 3] through `nodes` Relus: a graph without weights."""
    names = ["x", *[f"t{i}" for i in range(nodes - 1)], "y"]
    graph = helper.make_graph(
        [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(nodes)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def other_database(redis_url: str, offset: int) -> str:
    """Another Redis database than the suite's (a stack whose workers must not take the suite's jobs):
    `offset` below it, counted from 15 down (or up from 1 when the suite uses a low one), flushed."""
    import redis

    db = int(redis_url.rsplit("/", 1)[1])
    other = db - offset if db - offset > 0 else db + offset
    url = f"{redis_url.rsplit('/', 1)[0]}/{other}"
    redis.Redis.from_url(url).flushdb()
    return url


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
