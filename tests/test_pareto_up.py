"""`pareto up` on the embedded default: starts Valkey, SeaweedFS, the API and a worker, runs a job,
and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.stack import free_port, free_port_block, wait_job

REPO = Path(__file__).resolve().parents[1]


def readme_walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- walkthrough -->")[1].split("<!-- /walkthrough -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```")


def run_walkthrough(tmp_path: Path, env: dict[str, str], url: str) -> str:
    """The README's curl walk-through, as written, from a folder laid out like the repository."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    (tmp_path / "examples").symlink_to(REPO / "examples")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_walkthrough()], cwd=tmp_path,
                          env={**env, "PARETO_URL": url}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_pareto_up_runs_a_job_and_stops_cleanly(tmp_path, digits):
    api, redis_port, s3_port = free_port(), free_port(), free_port_block()
    unset = ("REDIS_URL", "S3_ENDPOINT_URL", "PARETO_API_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PARETO_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--port", str(api), "--redis-port", str(redis_port),
         "--s3-port", str(s3_port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # started the way a shell starts a background job: SIGINT ignored; Ctrl-C below must still stop it all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if "Ctrl-C" in line or not line:
                break
        text = "".join(out)
        key = re.search(r"development API key \(tenant dev\): (\S+)", text)
        assert key, text
        with httpx.Client(base_url=f"http://127.0.0.1:{api}", headers={"Authorization": f"Bearer {key.group(1)}"},
                          timeout=60) as client:
            assert client.get("/readyz").status_code == 200
            model = client.post("/v1/models", content=digits[0].read_bytes()).json()
            job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
            assert wait_job(client, job["id"])["status"] == "succeeded"
        assert listening(redis_port) and listening(s3_port)
        out_walk = run_walkthrough(tmp_path, env, f"http://127.0.0.1:{api}")
        assert "succeeded" in out_walk and "c1" in out_walk
        assert (tmp_path / "walkthrough" / "model-int8.onnx").stat().st_size * 3.5 < digits[0].stat().st_size
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(out) + rest
    assert "stopping" in rest
    for port in (api, redis_port, s3_port, s3_port + 1, s3_port + 2, s3_port + 3):
        assert not listening(port), f"port {port} still open after Ctrl-C"
    assert (tmp_path / "data" / "dev-api-key").read_text().strip().endswith(key.group(1))


def started_under(data_dir: Path) -> list[int]:
    """Processes whose command line or environment names the data folder: what `pareto up` started."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in text and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def test_pareto_up_stopped_while_starting_leaves_nothing_running(tmp_path):
    """SIGTERM while the servers start (here: once SeaweedFS has begun, before the API and the worker are up)
    stops everything started so far."""
    api, redis_port, s3_port = free_port(), free_port(), free_port_block()
    unset = ("REDIS_URL", "S3_ENDPOINT_URL", "PARETO_API_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    data = tmp_path / "data"
    env["PARETO_DATA_DIR"] = str(data)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(api), "--redis-port",
                             str(redis_port), "--s3-port", str(s3_port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (data / "logs" / "seaweedfs.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (data / "logs" / "seaweedfs.log").exists()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "stopped what was started" in out, out
    deadline = time.monotonic() + 10
    while started_under(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not started_under(data), out
    for port in (api, redis_port, s3_port):
        assert not listening(port)
