"""Cancellation: a queued job never runs; a running job stops between steps. Nothing is published."""

from __future__ import annotations

import time

from tests.helpers import SLOW_TARGET, upload_model
from tests.stack import wait_job


def test_cancelled_while_queued_never_runs(client, digits, stack):
    model = upload_model(client, digits[0])
    blocker = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": SLOW_TARGET}).json()
    wait_job(client, blocker["id"], until={"running"})
    queued = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"

    r = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"]

    assert wait_job(client, blocker["id"])["status"] == "succeeded"
    time.sleep(2)  # the worker has taken the cancelled job's message by now
    job = client.get(f"/v1/jobs/{queued['id']}").json()
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["code"] == "job_finished"


def test_cancelled_while_running_stops(client, digits):
    model = upload_model(client, digits[0])
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": SLOW_TARGET}).json()
    wait_job(client, job["id"], until={"running"})
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = wait_job(client, job["id"])
    assert done["status"] == "cancelled", done
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json()["code"] == "job_has_no_results"
