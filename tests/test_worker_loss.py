"""A worker SIGKILLed mid-job: the job is redelivered to another worker and finishes, or after the
redelivery cap ends `failed` with `worker_lost`. It never stays `running`.

A stack of its own (another Redis database) with a short visibility timeout, so that redelivery
takes seconds rather than the production hour.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import SLOW_TARGET, other_database, upload_model
from tests.stack import Stack, wait_job


@pytest.fixture(scope="module")
def fragile(services, tmp_path_factory):
    redis_url, s3_url, _ = services
    s = Stack.start(tmp_path_factory.mktemp("fragile"), other_database(redis_url, 1), s3_url, workers=2,
                    PARETO_VISIBILITY_TIMEOUT_S=25, PARETO_TASK_TIME_LIMIT_S=20, PARETO_MAX_ATTEMPTS=2,
                    PARETO_RESTORE_INTERVAL_S=1)
    yield s
    s.stop()


def running_worker(stack: Stack, job_id: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for w in stack.workers:
            if w.alive() and job_id in w.log.read_text(errors="replace"):
                return w
        time.sleep(0.1)
    raise AssertionError(f"no worker took {job_id}")


def kill_when_running(stack: Stack, client, job_id: str, attempt: int):
    job = wait_job(client, job_id, until={"running"}, timeout=120)
    while job["attempts"] < attempt:
        job = wait_job(client, job_id, until={"running"}, timeout=120)
    worker = running_worker(stack, job_id)
    time.sleep(0.5)
    worker.kill()
    return worker


@pytest.mark.slow
def test_killed_worker_job_is_rerun_by_another(fragile, digits):
    with fragile.client() as client:
        model = upload_model(client, digits[0])
        job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": SLOW_TARGET}).json()
        kill_when_running(fragile, client, job["id"], attempt=1)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        done = wait_job(client, job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        assert {a["name"] for a in artifacts} == {"model.onnx", "report.json", "report.html"}


@pytest.mark.slow
def test_job_that_keeps_killing_workers_fails_with_worker_lost(fragile, digits):
    with fragile.client() as client:
        model = upload_model(client, digits[0])
        job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": SLOW_TARGET}).json()
        for attempt in (1, 2):  # PARETO_MAX_ATTEMPTS=2
            kill_when_running(fragile, client, job["id"], attempt)
            if not any(w.alive() for w in fragile.workers):
                fragile.add_worker()
        done = wait_job(client, job["id"], timeout=120)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "worker_lost" and done["attempts"] == 2
        assert "lost 2 times" in done["error"]["message"]
