"""A repeated POST /v1/jobs with the same Idempotency-Key returns the same job and queues nothing more."""

from __future__ import annotations

import redis

from tests.helpers import upload_model


def test_the_same_idempotency_key_returns_the_same_job(client, other_client, digits, stack):
    model = upload_model(client, digits[0])
    body = {"model_id": model["id"], "recipe": "int8", "target": {"device": "cuda"}}  # no GPU worker: stays queued
    queue = redis.Redis.from_url(stack.env["REDIS_URL"])
    before = queue.llen("gpu")
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["location"] == first.headers["location"]
    assert queue.llen("gpu") == before + 1  # queued once
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me-2"}).json()
    assert other["id"] != first.json()["id"]
    # keys are per tenant: another tenant's same key is another job (and cannot read this one)
    theirs = upload_model(other_client, digits[0])
    mine = other_client.post("/v1/jobs", json={**body, "model_id": theirs["id"]},
                             headers={"Idempotency-Key": "retry-me-1"})
    assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]
    for c, job_id in ((client, first.json()["id"]), (client, other["id"]), (other_client, mine.json()["id"])):
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
