"""Faults on a private stack, each a test: a worker's pool child killed, SIGTERM mid-job, Redis restarted
(data kept) and wiped (rebuilt from S3), S3 unreachable for 30 s and past the retry budget, the API killed
during an upload, and a small soak with random kills. After each: no job lost, none stuck non-terminal,
no partial artifact listed.

The stack has its own Valkey (append-only file, so a restart keeps data), its own bucket, and reaches
SeaweedFS through a TCP proxy that can be paused. Short limits make redelivery take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
import redis

from cli import processes as P
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from tests.faults import TcpProxy, deliveries, kill_pool_child, run_soak, worker_taking
from tests.helpers import SLOW_TARGET, upload_model
from tests.stack import TERMINAL, Stack, free_port, wait_job

pytestmark = pytest.mark.slow

BUCKET = "pareto-faults"
WORKERS = 2
SETTINGS = dict(
    PARETO_VISIBILITY_TIMEOUT_S=90, PARETO_TASK_TIME_LIMIT_S=80, PARETO_MAX_ATTEMPTS=2, PARETO_RESTORE_INTERVAL_S=1,
    PARETO_WORKER_RETRY_S=60, PARETO_API_RETRY_S=3, PARETO_RATE_LIMIT_PER_S=0, S3_BUCKET=BUCKET,
)
LONG_TARGET = {**SLOW_TARGET, "repeats": 4 * SLOW_TARGET["repeats"]}


@dataclass
class Faults:
    stack: Stack
    proxy: TcpProxy
    root: Path
    redis_port: int
    valkey: P.Process
    started_workers: int = 0

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.env["REDIS_URL"], socket_timeout=5)

    def restart_valkey(self, wipe: bool = False) -> None:
        self.valkey.stop(timeout=10)  # SIGTERM: Valkey writes its append-only file and exits
        if wipe:
            shutil.rmtree(self.root / "redis" / "valkey")
        self.valkey, _ = P.start_valkey(self.root / "redis", self.redis_port)

    def restart_api(self, kill: bool = False) -> None:
        port = urlsplit(self.stack.api_url).port
        self.stack.api.kill() if kill else self.stack.api.stop(timeout=20)
        self.stack.api = P.start_api(self.stack.env, self.stack.root / "logs", "127.0.0.1", port)

    def add_worker(self) -> P.Process:
        """A worker with a name never used before (Celery node names and log files must not collide)."""
        self.started_workers += 1
        name = f"fault-worker{self.started_workers}"
        proc = P.start_worker(self.stack.env, self.stack.root / "logs", "cpu", name)
        self.stack.workers.append(proc)
        return proc

    def heal(self) -> None:
        """Whatever a failed test left broken, mended: Valkey, the proxy, the API and the workers."""
        if not self.valkey.alive():
            self.valkey, _ = P.start_valkey(self.root / "redis", self.redis_port)
        if self.proxy._listener is None:
            self.proxy.resume()
        if not self.stack.api.alive():
            self.restart_api()
        self.stack.workers = [w for w in self.stack.workers if w.alive()]
        while len(self.stack.workers) < WORKERS:
            self.add_worker()


@pytest.fixture(scope="module")
def faults(services, tmp_path_factory):
    _, s3_url, _ = services
    root = tmp_path_factory.mktemp("faults")
    port = free_port()
    valkey, redis_url = P.start_valkey(root / "redis", port)
    s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id=DEV_S3_ACCESS_KEY,
                      aws_secret_access_key=DEV_S3_SECRET_KEY, region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.ClientError:
        pass  # already there (a rerun against the same server)
    proxy = TcpProxy("127.0.0.1", urlsplit(s3_url).port)
    stack = Stack.start(root / "stack", redis_url, proxy.url, workers=0, **SETTINGS)
    f = Faults(stack, proxy, root, port, valkey)
    f.heal()  # starts the workers
    yield f
    stack.stop()
    proxy.close()
    P.stop_all([f.valkey], timeout=5)


@pytest.fixture(autouse=True)
def healthy(faults):
    faults.heal()
    yield


@pytest.fixture(scope="module")
def model(faults, digits):
    with faults.stack.client() as c:
        return upload_model(c, digits[0])


def submit(client, model: dict, target: dict | None = None, **extra) -> dict:
    r = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                      **({"target": target} if target else {}), **extra})
    assert r.status_code == 202, r.text
    return r.json()


def wait_running(client, job_id: str, attempts: int = 1, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["attempts"] >= attempts:
            return job
        assert job["status"] not in TERMINAL, job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never ran attempt {attempts}")


def assert_artifacts_intact(client, job_id: str) -> None:
    artifacts = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert {a["name"] for a in artifacts} == {"model.onnx", "report.json", "report.html"}, artifacts
    for a in artifacts:
        blob = httpx.get(a["url"], timeout=30).content
        assert hashlib.sha256(blob).hexdigest() == a["sha256"] and len(blob) == a["size_bytes"]


# --------------------------------------------------------------------------------------------------
# workers
# --------------------------------------------------------------------------------------------------

def test_a_job_whose_pool_child_keeps_dying_fails_with_worker_lost(faults, model):
    """SIGKILL of the Celery pool child (the process an OOM kill hits): Celery reports WorkerLostError and
    requeues the message at once; the attempts cap per job id ends it `worker_lost` after 2 deliveries."""
    s = faults.stack
    with s.client() as c:
        before: dict[str, int] = {}
        job = submit(c, model, SLOW_TARGET)
        for attempt in (1, 2):
            worker = worker_taking(s.workers, job["id"], before)
            wait_running(c, job["id"], attempt)
            before = {w.name: deliveries(w, job["id"]) for w in s.workers}
            kill_pool_child(worker)
        done = wait_job(c, job["id"], timeout=120)
        assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", done
        assert done["attempts"] == 2
        assert "WorkerLostError" in "".join(w.log.read_text(errors="replace") for w in s.workers)
        assert all(w.alive() for w in s.workers)  # the main processes survive; their pools restart a child


def test_sigterm_lets_the_running_job_finish(faults, model):
    """SIGTERM to a worker's main process (what Kubernetes sends): warm shutdown, the job ends by that worker."""
    s = faults.stack
    with s.client() as c:
        job = submit(c, model, SLOW_TARGET)
        worker = worker_taking(s.workers, job["id"], {})
        wait_running(c, job["id"])
        os.kill(worker.popen.pid, signal.SIGTERM)
        done = wait_job(c, job["id"], timeout=120)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        worker.popen.wait(60)  # it exits once the job is done
        assert "warm shutdown" in worker.log.read_text(errors="replace").lower()
        assert_artifacts_intact(c, job["id"])


def test_sigterm_to_the_whole_process_group_still_ends_the_job(faults, model):
    """SIGTERM to the whole group (what `pareto up` sends to stop) is a warm shutdown too: the pool child
    ignores it (workers/app.py) and finishes the job."""
    s = faults.stack
    with s.client() as c:
        job = submit(c, model, SLOW_TARGET)
        worker = worker_taking(s.workers, job["id"], {})
        wait_running(c, job["id"])
        worker.signal(signal.SIGTERM)
        faults.add_worker()  # somewhere to go, were it requeued
        done = wait_job(c, job["id"], timeout=180)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done  # the pool child ignored it
        worker.popen.wait(60)
        assert_artifacts_intact(c, job["id"])


# --------------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------------

def test_s3_unreachable_for_30_s_mid_job(faults, model):
    s = faults.stack
    with s.client() as c:
        job = submit(c, model)
        worker = worker_taking(s.workers, job["id"], {})
        wait_running(c, job["id"])
        faults.proxy.pause()
        try:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                now = c.get(f"/v1/jobs/{job['id']}").json()  # served from Redis meanwhile
                assert now["status"] == "running", now  # neither failed nor succeeded half-stored
                assert c.get(f"/v1/jobs/{job['id']}/artifacts").status_code == 409
                time.sleep(1)
        finally:
            faults.proxy.resume()
        done = wait_job(c, job["id"], timeout=120)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert "retrying" in worker.log.read_text(errors="replace")  # the outage did hit its S3 calls
        assert_artifacts_intact(c, job["id"])


def test_s3_down_past_the_retry_budget_fails_the_job_clearly(faults, model, monkeypatch):
    """The runner, in this process, with a 2 s budget while S3 is unreachable: `failed` with
    `storage_unavailable`, not `running`; the manifest it could not write is written once S3 is back."""
    s = faults.stack
    with s.client() as c:
        job = submit(c, model, {"device": "cuda"})  # no GPU worker: this test runs it itself
    for k, v in {**s.env, "PARETO_WORKER_RETRY_S": "2"}.items():
        monkeypatch.setenv(k, v)
    from core.jobstore import UNMIRRORED, manifest_key
    from core.settings import get_settings
    from workers.engine import runner

    get_settings.cache_clear()
    runner._stores.cache_clear()
    try:
        faults.proxy.pause()
        started = time.monotonic()
        runner.run_job("tenant-a", job["id"])
        assert time.monotonic() - started < 30  # bounded: a few budgets, not forever
        faults.proxy.resume()
        with s.client() as c:
            done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "failed" and done["error"]["code"] == "storage_unavailable", done
        _, jobs, objects = runner._stores()
        assert faults.redis.sismember(UNMIRRORED, job["id"])
        assert jobs.remirror() >= 1
        assert objects.get_json(manifest_key("tenant-a", job["id"]))["status"] == "failed"
    finally:
        faults.proxy.resume()
        get_settings.cache_clear()
        runner._stores.cache_clear()


# --------------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------------

def test_api_killed_during_an_upload(faults, digits):
    s = faults.stack
    s3 = boto3.client("s3", endpoint_url=s.env["S3_ENDPOINT_URL"], aws_access_key_id=DEV_S3_ACCESS_KEY,
                      aws_secret_access_key=DEV_S3_SECRET_KEY, region_name="us-east-1")
    with s.client() as c:
        known = {m["id"] for m in c.get("/v1/models").json()}
    sent = threading.Event()
    outcome: dict = {}

    def body():
        for i in range(400):  # 400 MiB at most; the API dies long before
            if i == 24:
                sent.set()
            yield b"\0" * (1 << 20)
            time.sleep(0.01)

    def upload():
        try:
            with s.client() as c:
                outcome["status"] = c.post("/v1/models", params={"format": "onnx"}, content=body()).status_code
        except httpx.HTTPError as e:
            outcome["error"] = repr(e)

    t = threading.Thread(target=upload)
    t.start()
    assert sent.wait(60)  # several parts are in S3 by now (uncompleted multipart upload)
    faults.restart_api(kill=True)
    t.join(60)
    assert "error" in outcome or outcome["status"] >= 500, outcome  # it failed, and the client knows
    with s.client() as c:
        assert {m["id"] for m in c.get("/v1/models").json()} == known  # no model record appeared
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="tenant-a/models/")
            for o in page.get("Contents", [])]
    folders = {k.split("/")[2] for k in keys}
    assert folders == known, "an object appeared for the interrupted upload"
    with s.client() as c:  # and the new process takes uploads
        assert upload_model(c, digits[0])["id"] not in known


# --------------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------------

def test_redis_restarted_mid_job_keeps_every_job(faults, model):
    s = faults.stack
    with s.client() as c:
        job = submit(c, model, SLOW_TARGET)
        wait_running(c, job["id"])
        faults.restart_valkey()
        for _ in range(20):  # the API answers (200, or 503 while it reconnects), never 500
            assert c.get(f"/v1/jobs/{job['id']}").status_code in (200, 503)
        done = wait_job(c, job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert_artifacts_intact(c, job["id"])
        after = wait_job(c, submit(c, model)["id"], timeout=180)  # the workers consume again
        assert after["status"] == "succeeded", after


def test_redis_data_loss_rebuilds_the_jobs_from_s3(faults, model):
    s = faults.stack
    with s.client() as c:
        finished = wait_job(c, submit(c, model)["id"])
        assert finished["status"] == "succeeded"
        # one worker, so that the second job waits in the queue behind the first
        for w in s.workers[1:]:
            w.stop()
        s.workers = s.workers[:1]
        running = submit(c, model, LONG_TARGET)
        wait_running(c, running["id"])
        queued = submit(c, model)
        assert c.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"

        faults.restart_valkey(wipe=True)  # Redis comes back empty: records, queue and all
        assert c.get(f"/v1/jobs/{finished['id']}").status_code in (404, 503)
        faults.restart_api()  # finds no job record: rebuilds from the manifests
        assert "rebuilt them from S3" in s.api.log.read_text(errors="replace")

        again = c.get(f"/v1/jobs/{finished['id']}").json()
        assert again["status"] == "succeeded" and again["finished_at"] == finished["finished_at"]
        assert_artifacts_intact(c, finished["id"])
        lost = c.get(f"/v1/jobs/{running['id']}").json()
        assert lost["status"] == "failed" and lost["error"]["code"] == "interrupted", lost
        rerun = wait_job(c, queued["id"], timeout=180)  # enqueued again
        assert rerun["status"] == "succeeded", rerun
        listed = {j["id"] for j in c.get("/v1/jobs", params={"limit": 100}).json()["items"]}
        assert {finished["id"], running["id"], queued["id"]} <= listed

        # `pareto admin rebuild` does the same without a restart, restoring only what is missing
        faults.redis.flushall()
        assert c.get(f"/v1/jobs/{finished['id']}").status_code == 404
        out = subprocess.run([sys.executable, "-m", "cli.main", "admin", "rebuild"], env={**os.environ, **s.env},
                             capture_output=True, text=True, timeout=120, check=True)
        counts = json.loads(out.stdout.splitlines()[0])
        assert counts["present"] == 0 and counts["restored"] >= 3 and counts["unreadable"] == 0, counts
        assert c.get(f"/v1/jobs/{finished['id']}").json()["status"] == "succeeded"
        out = subprocess.run([sys.executable, "-m", "cli.main", "admin", "rebuild"], env={**os.environ, **s.env},
                             capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(out.stdout.splitlines()[0])["present"] == sum(counts.values())


# --------------------------------------------------------------------------------------------------
# soak
# --------------------------------------------------------------------------------------------------

def test_soak_jobs_with_random_worker_kills(faults, model):
    s = faults.stack
    with s.client() as c:
        seen = run_soak(s, c, model["id"], jobs=6, kills=2, seed=7, timeout=400)
        print({k: v for k, v in seen.items() if k != "jobs"})
        assert seen["kills"] == 2
        assert seen["lost"] == 0 and seen["stuck"] == 0 and seen["terminal"] == 6, seen
        assert set(seen["statuses"]) <= {"succeeded", "failed"}
        assert set(seen["codes"]) <= {"worker_lost"}, seen["codes"]
        for job_id, job in seen["jobs"].items():
            if job["status"] == "succeeded":
                assert_artifacts_intact(c, job_id)
