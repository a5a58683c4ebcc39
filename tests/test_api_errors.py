"""Keys, tenants and bad input: clear problem+json answers with stable codes, and nothing queued."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from tests.conftest import MAX_UPLOAD_BYTES
from tests.helpers import problem, upload_model
from tests.stack import wait_job


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_401_without_a_valid_key(stack, headers):
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/steps"),
                         ("POST", "/v1/models")]:
        r = httpx.request(method, stack.api_url + path, headers=headers, content=b"x")
        problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


def test_other_tenants_resources_are_404(client, other_client, digits):
    model = upload_model(client, digits[0])
    job = wait_job(client, client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"])
    assert job["status"] == "succeeded"
    for method, path in [
        ("GET", f"/v1/models/{model['id']}"), ("DELETE", f"/v1/models/{model['id']}"),
        ("GET", f"/v1/jobs/{job['id']}"), ("GET", f"/v1/jobs/{job['id']}/report"),
        ("GET", f"/v1/jobs/{job['id']}/artifacts"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
    ]:
        problem(other_client.request(method, path), 404, "model_not_found" if "models" in path else "job_not_found")
    problem(other_client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}), 404, "model_not_found")
    assert job["id"] not in [j["id"] for j in other_client.get("/v1/jobs").json()["items"]]
    assert model["id"] not in [m["id"] for m in other_client.get("/v1/models").json()]
    assert client.get(f"/v1/models/{model['id']}").status_code == 200  # still there for its owner


@pytest.mark.parametrize("body", [b"not a model at all", b"\x08\x07" + b"\xff" * 100, b"PK\x03\x04garbage"])
def test_garbage_upload_is_422_with_a_reason(client, body):
    body = problem(client.post("/v1/models", content=body, params={"format": "onnx"}), 422, "invalid_model")
    assert "ONNX" in body["detail"] or "protobuf" in body["detail"]


def test_empty_upload_is_422(client):
    problem(client.post("/v1/models", content=b""), 422, "empty_upload")


def test_oversize_upload_is_413(client, stack):
    big = b"\0" * (MAX_UPLOAD_BYTES + 1024 * 1024)
    problem(client.post("/v1/models", content=big), 413, "payload_too_large")

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(0, len(big), 1 << 20):
            yield b"\0" * (1 << 20)

    problem(client.post("/v1/models", content=chunks()), 413, "payload_too_large")
    problem(client.post("/v1/models", files={"file": ("m.onnx", big)}), 413, "payload_too_large")


def _queued_messages(stack) -> int:
    return redis.Redis.from_url(stack.env["REDIS_URL"]).llen("cpu")


@pytest.mark.parametrize("recipe, code, where", [
    ({"steps": [{"shrinkify": {}}]}, "invalid_recipe", "unknown step 'shrinkify'"),
    ({"steps": [{"quantize": {"mode": "magic"}}]}, "invalid_recipe", "recipe.steps.0.quantize.mode"),
    ({"steps": [{"quantize": {"per_channel": "sometimes"}}]}, "invalid_recipe", "per_channel"),
    ({"steps": [{"quantize": {"bits": 3}}]}, "invalid_recipe", "bits"),
    ({"steps": []}, "invalid_recipe", "recipe.steps"),
    ({"steps": [{"quantize": {}}], "target": {"batch_sizes": [0]}}, "invalid_recipe", "batch"),
    ("no-such-recipe", "unknown_recipe", "no-such-recipe"),
])
def test_bad_recipe_is_422_and_nothing_is_queued(client, digits, stack, recipe, code, where):
    model = upload_model(client, digits[0])
    before = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    queued = _queued_messages(stack)
    body = problem(client.post("/v1/jobs", json={"model_id": model["id"], "recipe": recipe}), 422, code)
    assert where in body["detail"]
    assert client.get("/v1/jobs", params={"limit": 100}).json()["items"] == before
    assert _queued_messages(stack) == queued


def test_unknown_model_and_malformed_body(client):
    problem(client.post("/v1/jobs", json={"model_id": "m_0000000000000000000000", "recipe": "int8"}), 404,
            "model_not_found")
    problem(client.post("/v1/jobs", json={"recipe": "int8"}), 422, "invalid_request")
    problem(client.get("/v1/jobs/j_nope"), 404, "job_not_found")
    problem(client.get("/v1/models/../../etc"), 404, "not_found")


def test_report_of_an_unfinished_job_is_409(client, digits):
    model = upload_model(client, digits[0])
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                        "target": {"device": "cuda"}}).json()  # no GPU worker: stays queued
    problem(client.get(f"/v1/jobs/{job['id']}/report"), 409, "job_not_finished")
    problem(client.get(f"/v1/jobs/{job['id']}/artifacts"), 409, "job_not_finished")
    client.post(f"/v1/jobs/{job['id']}/cancel")
    problem(client.get(f"/v1/jobs/{job['id']}/report"), 409, "job_has_no_results")


def test_a_record_that_does_not_read_is_a_prompt_500_and_spares_the_others(client, stack, digits):
    """A job record another version wrote, say: its own GET is a problem, answered at once; the sweep that
    fails jobs no worker can serve goes on for the rest."""
    store = redis.Redis.from_url(stack.env["REDIS_URL"])
    model = upload_model(client, digits[0])
    broken = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                           "target": {"device": "cuda"}}).json()["id"]
    waiting = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                            "target": {"device": "cuda"}}).json()["id"]
    original = store.get(f"pareto:job:{broken}")
    record = json.loads(original)
    record["recipe"]["steps"] = [{"drop_layers": {"keep_every": 2, "drop": [0]}}]
    store.set(f"pareto:job:{broken}", json.dumps(record))
    try:
        problem(client.get(f"/v1/jobs/{broken}", timeout=15), 500, "internal_error")
        job = wait_job(client, waiting, timeout=60)  # no GPU worker: the watchdog fails it
        assert job["status"] == "failed" and job["error"]["code"] == "target_unavailable"
    finally:
        store.set(f"pareto:job:{broken}", original)
