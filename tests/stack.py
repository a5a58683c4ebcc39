"""A running Pareto for tests: real Redis, real SeaweedFS, the API and Celery workers as processes,
started through the same launcher `pareto up` uses (cli/processes.py)."""

from __future__ import annotations

import random
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cli import processes as P
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY

TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_block() -> int:
    """A base port with base..base+3 and their +10000 gRPC twins free (SeaweedFS needs all eight)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        if all(_bindable(p) for off in range(4) for p in (base + off, base + off + 10000)):
            return base
    raise RuntimeError("no free block of ports for SeaweedFS")


def make_bucket(s3_url: str, name: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3_url, aws_access_key_id=DEV_S3_ACCESS_KEY,
                 aws_secret_access_key=DEV_S3_SECRET_KEY, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@dataclass
class Stack:
    """An API and workers on given Redis / S3, with two tenants."""

    root: Path
    env: dict[str, str]
    keys: dict[str, str]
    api_url: str = ""
    api: P.Process | None = None
    workers: list[P.Process] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, redis_url: str, s3_url: str, workers: int = 1, **settings: str) -> Stack:
        """`S3_BUCKET` defaults to a bucket of the stack's own: an API that starts on an empty Redis rebuilds
        job records from the manifests in its bucket, and must not adopt another stack's jobs."""
        keys = {"tenant-a": secrets.token_urlsafe(16), "tenant-b": secrets.token_urlsafe(16)}
        if "S3_BUCKET" not in settings:
            settings["S3_BUCKET"] = make_bucket(s3_url, f"pareto-{secrets.token_hex(4)}")
        env = {
            "REDIS_URL": redis_url, "S3_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": DEV_S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": DEV_S3_SECRET_KEY,
            "PARETO_API_KEYS": ",".join(f"{t}:{k}" for t, k in keys.items()),
            "PARETO_DATA_DIR": str(root), "PARETO_INTRA_OP_THREADS": "1",
            **{k.upper(): str(v) for k, v in settings.items()},
        }
        stack = cls(root, env, keys)
        port = free_port()
        stack.api = P.start_api(env, root / "logs", "127.0.0.1", port)
        stack.api_url = f"http://127.0.0.1:{port}"
        for _ in range(workers):
            stack.add_worker()
        return stack

    def add_worker(self, queues: str = "cpu") -> P.Process:
        name = f"worker{len(self.workers) + 1}"
        proc = P.start_worker(self.env, self.root / "logs", queues, name)
        self.workers.append(proc)
        return proc

    def client(self, tenant: str = "tenant-a") -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {self.keys[tenant]}"},
                            timeout=60)

    def stop(self) -> None:
        P.stop_all([*self.workers, *([self.api] if self.api else [])], timeout=20)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 180, until=TERMINAL) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
