"""The SDK and the `pareto` client commands against the running service (real Redis, S3, API, worker),
and what they stand on: the job event stream, `/metrics`, request ids and JSON logs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from cli import processes as P
from core.job import Job, JobStatus
from core.recipe import Goal, Recipe, Target
from core.recipes import builtin_recipe
from core.report import Report
from sdk import ApiError, Client
from sdk.sse import parse
from tests.stack import free_port

REPO = Path(__file__).resolve().parents[1]
TARGET = {"batch_sizes": [1, 8], "warmup": 2, "repeats": 20}
QUEUED_FOREVER = {"device": "cuda"}  # the test stack has no GPU worker: such a job stays queued
ORDER = ["queued", "running", "succeeded"]


@dataclass
class RoundTrip:
    model_path: Path
    data_path: Path
    job: Job
    seen: list[Job]


@pytest.fixture
def pareto(stack):
    with Client(stack.api_url, stack.keys["tenant-a"]) as c:
        yield c


@pytest.fixture(scope="module")
def roundtrip(stack, digits) -> RoundTrip:
    """One int8 job through the SDK: upload, submit, wait with a progress callback."""
    model_path, data_path = digits
    seen: list[Job] = []
    with Client(stack.api_url, stack.keys["tenant-a"]) as pareto:
        model = pareto.upload_model(model_path, name="sdk-digits")
        dataset = pareto.upload_dataset(data_path)
        job = pareto.submit(model.id, "int8", dataset_id=dataset.id, target=TARGET)
        assert job.status is JobStatus.queued and job.model_id == model.id and job.dataset_id == dataset.id
        done = pareto.wait(job.id, progress=seen.append, timeout=300)
    return RoundTrip(model_path, data_path, done, seen)


def cli(stack, *args: str, tenant: str = "tenant-a", env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PARETO_URL": stack.api_url, "PARETO_API_KEY": stack.keys[tenant], **(env or {})}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- SDK ---------------------------------------------------------------------------------------------
def test_sdk_round_trip(roundtrip, pareto, tmp_path):
    job, seen = roundtrip.job, roundtrip.seen
    assert job.status is JobStatus.succeeded and job.progress.fraction == 1.0
    statuses = [j.status for j in seen]
    assert JobStatus.running in statuses and statuses[-1] is JobStatus.succeeded
    assert [ORDER.index(s) for s in statuses] == sorted(ORDER.index(s) for s in statuses)
    fractions = [j.progress.fraction for j in seen]
    assert fractions == sorted(fractions)

    model = next(m for m in pareto.models() if m.id == job.model_id)
    assert model.sha256 == sha256(roundtrip.model_path) and model.size_bytes == roundtrip.model_path.stat().st_size
    assert pareto.job(job.id) == job

    report = pareto.report(job.id)
    assert isinstance(report, Report) and report.job_id == job.id and report.recommended == "c1"
    files = pareto.download_artifacts(job.id, tmp_path / "out")
    assert set(files) == {"model.onnx", "report.json", "report.html"}
    links = {a.name: a for a in pareto.artifacts(job.id)}
    for name, path in files.items():
        assert path.parent == tmp_path / "out" and sha256(path) == links[name].sha256
    assert Report.model_validate_json(files["report.json"].read_text()) == report
    assert report.candidates[0].metrics.size_bytes == files["model.onnx"].stat().st_size
    assert not list((tmp_path / "out").glob("*.part"))


def test_sdk_errors_carry_the_problem_code(pareto, stack, roundtrip):
    with pytest.raises(ApiError) as e:
        pareto.submit(roundtrip.job.model_id, "no-such-recipe")
    assert (e.value.status, e.value.code) == (422, "unknown_recipe")
    with pytest.raises(ApiError) as e:
        pareto.submit(roundtrip.job.model_id, {"steps": [{"no_such_step": {}}]})
    assert (e.value.status, e.value.code) == (422, "invalid_recipe")
    with pytest.raises(ApiError) as e:
        pareto.job("j_000000000000aaaaaaaaaa")
    assert (e.value.status, e.value.code) == (404, "job_not_found")
    with Client(stack.api_url, "wrong-key") as stranger, pytest.raises(ApiError) as e:
        stranger.recipes()
    assert (e.value.status, e.value.code) == (401, "unauthorized")


def test_sdk_catalog(pareto):
    recipes = {r.name: r for r in pareto.recipes()}
    assert "int8" in recipes and recipes["int8"].steps[0].name == "quantize"
    assert pareto.recipe("int8") == recipes["int8"]
    assert "quantize" in {s["name"] for s in pareto.steps()}


class _Scripted(BaseHTTPRequestHandler):
    """Answers from server.script: [(status, headers, json body)], records what it received."""

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, len(body), time.monotonic()))
        status, headers, payload = self.server.script.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.script, server.seen = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def problem(code: str, status: int) -> dict:
    return {"type": f"https://pareto.dev/problems/{code}", "title": code, "status": status, "detail": code,
            "code": code}


def test_sdk_retries_429_and_503_as_retry_after_says(scripted, digits):
    server, url = scripted
    server.script = [(503, {"Retry-After": "1"}, problem("service_unavailable", 503)),
                     (429, {"Retry-After": "1"}, problem("rate_limited", 429)),
                     (200, {}, [])]
    with Client(url, "k") as pareto:
        assert pareto.steps() == []
    times = [t for *_, t in server.seen]
    assert len(times) == 3 and times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95

    # an upload is streamed again from disk on the retry
    data = digits[1]
    record = {"id": "d_000000000000aaaaaaaaaa", "name": "digits", "size_bytes": data.stat().st_size,
              "sha256": sha256(data), "arrays": []}
    server.script, server.seen = [(503, {"Retry-After": "0"}, problem("service_unavailable", 503)),
                                  (201, {}, record)], []
    with Client(url, "k") as pareto:
        assert pareto.upload_dataset(data).id == record["id"]
    assert [n for _, _, n, _ in server.seen] == [data.stat().st_size] * 2

    # bounded: the wait is capped, the retries are counted, then the service's code is raised
    server.script, server.seen = [(429, {"Retry-After": "3600"}, problem("rate_limited", 429))] * 3, []
    started = time.monotonic()
    with Client(url, "k", max_retries=2, max_retry_wait=0.2) as pareto, pytest.raises(ApiError) as e:
        pareto.steps()
    assert (e.value.status, e.value.code) == (429, "rate_limited")
    assert len(server.seen) == 3 and time.monotonic() - started < 5


def test_sdk_wait_polls_where_there_is_no_event_stream(scripted):
    server, url = scripted
    job = Job(id="j_000000000000aaaaaaaaaa", tenant="t", model_id="m_000000000000aaaaaaaaaa",
              recipe=builtin_recipe("int8"))
    running = job.moved_to(JobStatus.running)
    server.script = [(404, {}, problem("not_found", 404)),  # a service without the events route
                     (200, {}, running.model_dump(mode="json")),
                     (200, {}, running.moved_to(JobStatus.succeeded).model_dump(mode="json"))]
    seen = []
    with Client(url, "k") as pareto:
        done = pareto.wait(job.id, progress=seen.append, poll_interval=0.1, timeout=10)
    assert done.status is JobStatus.succeeded and [j.status for j in seen] == ["running", "succeeded"]
    assert [path for _, path, _, _ in server.seen] == [f"/v1/jobs/{job.id}/events"] + [f"/v1/jobs/{job.id}"] * 2


# -- the event stream --------------------------------------------------------------------------------
def test_events_stream_status_and_progress_until_the_end(client, other_client, stack, roundtrip):
    r = client.post("/v1/jobs", json={"model_id": roundtrip.job.model_id, "recipe": "int8", "target": TARGET})
    job_id = r.json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(parse(response.iter_lines()))  # ends by itself after the terminal state
    jobs = [json.loads(e.data) for e in events]
    assert [e.event for e in events][0] == "status" and {e.event for e in events} <= {"status", "progress"}
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    statuses = [j["status"] for j in jobs]
    assert statuses[-1] == "succeeded" and "running" in statuses
    assert [ORDER.index(s) for s in statuses] == sorted(ORDER.index(s) for s in statuses)
    for before, after in zip(events, events[1:], strict=False):
        changed = json.loads(before.data)["status"] != json.loads(after.data)["status"]
        assert after.event == ("status" if changed else "progress")
    assert jobs[-1] == client.get(f"/v1/jobs/{job_id}").json()

    # a finished job: one event, then the end
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert [json.loads(e.data)["status"] for e in parse(response.iter_lines())] == ["succeeded"]
    # tenants and keys as on every job route
    gone = other_client.get(f"/v1/jobs/{job_id}/events")
    assert gone.status_code == 404 and gone.json()["code"] == "job_not_found"
    anonymous = httpx.get(f"{stack.api_url}/v1/jobs/{job_id}/events")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"


def test_sdk_wait_follows_the_stream_across_reconnects(stack, roundtrip, tmp_path):
    """Streams end before the gateway's request timeout; `wait` connects again until the job ends."""
    port = free_port()
    short = P.start_api({**stack.env, "PARETO_REQUEST_TIMEOUT_S": "7"}, tmp_path / "logs", "127.0.0.1", port)
    try:
        with Client(f"http://127.0.0.1:{port}", stack.keys["tenant-a"]) as pareto:
            job = pareto.submit(roundtrip.job.model_id, "int8", target=QUEUED_FOREVER)
            canceller = threading.Timer(5, pareto.cancel, [job.id])  # after two streams of 2 s have ended
            canceller.start()
            seen: list[Job] = []
            assert pareto.wait(job.id, progress=seen.append, timeout=30).status is JobStatus.cancelled
            canceller.join()
    finally:
        short.stop()
    assert [j.status for j in seen] == [JobStatus.queued, JobStatus.cancelled]
    streams = [e for e in json_lines(short.log) if e.get("path") == f"/v1/jobs/{job.id}/events"]
    assert len(streams) >= 3 and all(e["status"] == 200 for e in streams)


# -- the CLI -----------------------------------------------------------------------------------------
def test_cli_submit_waits_prints_the_frontier_and_downloads(stack, digits, tmp_path):
    model, data = digits
    out = tmp_path / "out"
    run = cli(stack, "submit", str(model), "--recipe", "int8", "--data", str(data),
              "--target-json", json.dumps(TARGET), "--wait", "--out", str(out))
    assert run.returncode == 0, run.stderr
    job_id = re.search(r"submitted job (j_[0-9a-f]+)", run.stderr).group(1)
    progress = [line for line in run.stderr.splitlines() if line.startswith("[")]
    assert any("running" in line for line in progress) and "100%  succeeded" in progress[-1]
    assert re.search(r"^candidate\s+steps\s+size", run.stdout, re.M)
    assert re.search(r"^baseline\s", run.stdout, re.M) and re.search(r"^c1 \*\s+quantize", run.stdout, re.M)
    with Client(stack.api_url, stack.keys["tenant-a"]) as pareto:
        links = {a.name: a for a in pareto.artifacts(job_id)}
    assert {p.name for p in out.iterdir()} == set(links) == {"model.onnx", "report.json", "report.html"}
    for name, link in links.items():
        assert sha256(out / name) == link.sha256
        assert f"downloaded {name} -> {out / name} (sha256 checked)" in run.stdout


def test_cli_exit_code_when_the_quality_goal_is_missed(stack, digits, tmp_path):
    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps({"name": "impossibly-small", "steps": [{"quantize": {"mode": "dynamic"}}],
                                  "goals": [{"metric": "size_bytes", "threshold": 1000}]}))
    out = tmp_path / "out"
    run = cli(stack, "submit", str(digits[0]), "--recipe", str(recipe), "--target-json", json.dumps(TARGET),
              "--out", str(out))
    assert run.returncode == 5, run.stderr
    assert "quality goals were missed" in run.stderr and "MISSED" in run.stdout
    assert (out / "report.json").exists()
    job_id = re.search(r"submitted job (j_[0-9a-f]+)", run.stderr).group(1)
    assert cli(stack, "report", job_id).returncode == 5


def unrunnable_model(path: Path) -> Path:
    """A valid ONNX graph (the checker passes custom domains) that onnxruntime cannot run: fails in the worker."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Unknown", ["h"], ["y"], domain="example")],
        "unrunnable", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example", 1)]),
              path)
    return path


def test_cli_exit_code_when_the_job_fails(stack, tmp_path):
    run = cli(stack, "submit", str(unrunnable_model(tmp_path / "unrunnable.onnx")), "--recipe", "int8", "--wait")
    assert run.returncode == 3, run.stderr
    assert re.search(r"job j_[0-9a-f]+ failed: [a-z_]+: .+", run.stderr)


def test_cli_exit_code_when_the_job_is_cancelled(stack, digits, pareto):
    env = {**os.environ, "PARETO_URL": stack.api_url, "PARETO_API_KEY": stack.keys["tenant-a"]}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "submit", str(digits[0]), "--recipe", "int8",
                             "--target-json", json.dumps(QUEUED_FOREVER), "--wait"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if found := re.search(r"submitted job (j_[0-9a-f]+)", line):
                break
        time.sleep(1)  # the CLI is following the job's events now
        assert pareto.cancel(found.group(1)).status is JobStatus.cancelled
        assert proc.wait(60) == 4
        assert f"job {found.group(1)} was cancelled" in proc.stderr.read()
    finally:
        proc.kill()


def test_cli_jobs_report_recipes_steps(stack, roundtrip):
    job = roundtrip.job
    listed = cli(stack, "jobs", "--limit", "100")
    assert listed.returncode == 0 and re.search(rf"^{job.id}\s+succeeded\s+100%\s+int8\s", listed.stdout, re.M)
    table = cli(stack, "report", job.id)
    assert table.returncode == 0 and re.search(r"^c1 \*\s+quantize", table.stdout, re.M)
    as_json = cli(stack, "report", job.id, "--json")
    with Client(stack.api_url, stack.keys["tenant-a"]) as pareto:
        assert Report.model_validate_json(as_json.stdout) == pareto.report(job.id)
    recipes = cli(stack, "recipes")
    assert recipes.returncode == 0 and re.search(r"^int8\s+\(quantize\)", recipes.stdout, re.M)
    steps = cli(stack, "steps")
    assert steps.returncode == 0 and re.search(r"^quantize  \(onnx, pt2; needs a dataset: ", steps.stdout, re.M)

    other = cli(stack, "report", job.id, tenant="tenant-b")
    assert other.returncode == 1 and "job_not_found (404)" in other.stderr
    unset = cli(stack, "jobs", env={"PARETO_URL": "", "PARETO_API_KEY": ""})
    assert unset.returncode == 2 and "PARETO_URL" in unset.stderr
    missing = cli(stack, "submit", "no-such-model.onnx", "--recipe", "int8")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_ci_example_fails_the_build_when_the_goal_is_missed(stack, digits, tmp_path):
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "github-actions.yml").read_text())
    job = workflow["jobs"]["optimize"]
    assert {"PARETO_URL", "PARETO_API_KEY", "MODEL", "DATA", "RECIPE"} <= set(job["env"])
    example = Recipe.model_validate_json((REPO / "docs" / "ci" / "recipe.json").read_text())
    assert any(g.metric == "quality" and g.max_degradation for g in example.goals)
    step = next(s for s in job["steps"] if "pareto submit" in s.get("run", ""))

    recipe = tmp_path / "recipe.json"  # the example's, with a goal no model meets
    recipe.write_text(example.model_copy(update={"goals": [*example.goals, Goal(metric="size_bytes", threshold=1000)],
                                                 "target": Target(**TARGET)}).model_dump_json())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PARETO_URL": stack.api_url, "PARETO_API_KEY": stack.keys["tenant-a"], "MODEL": str(digits[0]),
           "DATA": str(digits[1]), "RECIPE": str(recipe), "GITHUB_REPOSITORY": "org/model", "GITHUB_SHA": "ci-test"}
    run = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)  # as GitHub's runner does
    assert run.returncode == 1, run.stderr
    assert "::error::Pareto: the optimized model missed its quality goal" in run.stdout
    assert "MISSED" in run.stdout and (tmp_path / "pareto-out" / "report.json").exists()


# -- metrics, request ids, logs ----------------------------------------------------------------------
def samples(stack) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{stack.api_url}/metrics")  # no API key: Prometheus scrapes it
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics(stack, client, roundtrip):
    queued = client.post("/v1/jobs", json={"model_id": roundtrip.job.model_id, "recipe": "int8",
                                           "target": QUEUED_FOREVER}).json()
    try:
        m = samples(stack)
    finally:
        client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert m[("pareto_redis_up", ())] == 1
    assert m[("pareto_jobs", (("state", "succeeded"),))] >= 1
    assert m[("pareto_jobs", (("state", "queued"),))] >= 1
    assert set(JobStatus) == {state for (name, labels) in m if name == "pareto_jobs" for _, state in labels}
    assert m[("pareto_queue_depth", (("queue", "gpu"),))] >= 1 and ("pareto_queue_depth", (("queue", "cpu"),)) in m
    count = m[("pareto_step_duration_seconds_count", (("step", "quantize"),))]
    assert count >= 1 and m[("pareto_step_duration_seconds_sum", (("step", "quantize"),))] > 0
    assert m[("pareto_step_duration_seconds_bucket", (("le", "+Inf"), ("step", "quantize")))] == count
    model_bytes = roundtrip.model_path.stat().st_size
    assert m[("pareto_upload_bytes_total", (("kind", "models"), ("outcome", "accepted")))] >= model_bytes
    assert m[("pareto_upload_bytes_total", (("kind", "datasets"), ("outcome", "accepted")))] >= 1

    after = samples(stack)  # the cancelled job moved from queued to cancelled
    assert after[("pareto_jobs", (("state", "cancelled"),))] == m[("pareto_jobs", (("state", "cancelled"),))] + 1


def test_metrics_count_refused_uploads(stack, client):
    before = samples(stack).get(("pareto_upload_bytes_total", (("kind", "models"), ("outcome", "refused"))), 0)
    r = client.post("/v1/models", content=b"not a model" * 100, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 422
    after = samples(stack)[("pareto_upload_bytes_total", (("kind", "models"), ("outcome", "refused")))]
    assert after - before == 1100


def test_request_id_is_echoed_or_made(stack, client):
    made = httpx.get(f"{stack.api_url}/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/v1/recipes", headers={"X-Request-ID": "ci-run-42"}).headers["x-request-id"] == "ci-run-42"
    odd = client.get("/v1/recipes", headers={"X-Request-ID": "two words" + "x" * 200}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", odd)
    refused = httpx.get(f"{stack.api_url}/v1/jobs", headers={"X-Request-ID": "no-key"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-key"
    missing = client.get("/v1/jobs/j_000000000000aaaaaaaaaa", headers={"X-Request-ID": "nf"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "nf"


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_logs_are_json_lines_with_job_and_tenant(stack, client, roundtrip):
    job_id = roundtrip.job.id
    client.get(f"/v1/jobs/{job_id}", headers={"X-Request-ID": "log-check"})
    worker = [e for e in json_lines(stack.root / "logs" / "worker1.log") if e.get("job_id") == job_id]
    assert worker and all(e["tenant"] == "tenant-a" for e in worker)
    assert any(e["message"] == f"job {job_id}: task pareto.optimize started" for e in worker)
    assert any(e.get("step") == "quantize" and e["seconds"] > 0 for e in worker)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in worker)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        api = [e for e in json_lines(stack.root / "logs" / "api.log") if e.get("request_id") == "log-check"]
        if api:
            break
        time.sleep(0.1)
    assert api[0]["job_id"] == job_id and api[0]["tenant"] == "tenant-a"
    assert api[0]["status"] == 200 and api[0]["path"] == f"/v1/jobs/{job_id}" and api[0]["logger"] == "pareto.access"


@pytest.mark.gpu
def test_worker_gpu_memory_is_published(services):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import redis

    from core import metrics
    from service.metrics import exposition
    from workers.engine import telemetry

    block = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    memory = telemetry.gpu_memory()
    assert memory["torch_allocated_bytes"] >= block.numel() and memory["used_bytes"] >= block.numel()
    r = redis.Redis.from_url(services[0])
    metrics.publish_gpu_memory(r, "gpu-test", memory, 60)
    assert metrics.gpu_memory(r)["gpu-test"]["torch_allocated_bytes"] == memory["torch_allocated_bytes"]
    assert 'pareto_worker_gpu_used_bytes{device="0",worker="gpu-test"}' in exposition(r).decode()
