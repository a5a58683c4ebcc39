"""A job's life on a worker: claim it (counting deliveries per job id), run the recipe, store the
results, and always leave the job in a terminal state.

`succeeded` is written only after every artifact and the report are in S3. A delivery that finds the
job already terminal (cancelled while queued, or finished before a redelivery) does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from billiard.exceptions import SoftTimeLimitExceeded

from core.assets import AssetStore
from core.errors import BudgetExceeded, ErrorCode, JobCancelled, ParetoError, without_paths
from core.job import Artifact, Job, JobError, JobStatus, Progress
from core.jobstore import JobStore, redis_client
from core.objectstore import ObjectStore, job_prefix
from core.settings import Settings, get_settings
from workers.engine import telemetry  # noqa: F401  (JSON logs with the job's id and tenant, via Celery's signals)
from workers.engine.budget import Budget
from workers.engine.coordinator import Stored, run_recipe
from workers.engine.fleet import POLL_S, Fleet
from workers.engine.webhooks import notify
from workers.engine.workspace import attach, run_node

log = logging.getLogger("pareto.worker")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
OCTETS = "application/octet-stream"
HELPER_IDLE_S = 10  # a helper waits this long for a node to become ready before it leaves


class _Skip(Exception):
    """The delivery has nothing to do: the job is already terminal."""


@lru_cache
def _stores() -> tuple[Settings, JobStore, ObjectStore]:
    settings = get_settings()
    objects = ObjectStore(settings)
    return settings, JobStore(redis_client(settings), objects), objects


def _claim(jobs: JobStore, job_id: str, max_attempts: int) -> Job | None:
    def claim(job: Job) -> Job:
        if job.status.terminal:
            raise _Skip
        attempts = job.attempts + 1
        if attempts > max_attempts:  # earlier deliveries died with their worker
            return job.moved_to(JobStatus.failed, attempts=job.attempts, error=JobError(
                code=ErrorCode.worker_lost,
                message=f"the worker running this job was lost {job.attempts} times (out of memory, "
                        "killed, or node lost); not retried again"))
        return job.moved_to(JobStatus.running, attempts=attempts, progress=Progress(message="starting"))

    try:
        job = jobs.update(job_id, claim)
    except _Skip:
        return None
    if job.status.terminal:  # this delivery ended it (worker_lost)
        notify(job, get_settings())
    return job if job.status is JobStatus.running else None


def _finish(jobs: JobStore, job_id: str, status: JobStatus, **changes) -> None:
    moved = [False]  # whether this call ended the job (then it sends the callback)

    def finish(job: Job) -> Job:
        moved[0] = not job.status.terminal
        if job.status.terminal:
            return job
        if status is JobStatus.succeeded and job.cancel_requested:
            return job.moved_to(JobStatus.cancelled)
        return job.moved_to(status, **changes)

    job = jobs.update(job_id, finish)
    if moved[0]:
        notify(job, get_settings())


def run_job(tenant: str, job_id: str) -> None:
    settings, jobs, objects = _stores()
    job = jobs.load(job_id)
    if job is None or job.tenant != tenant:
        log.error("job %s of tenant %s not found; dropping the message", job_id, tenant)
        return
    job = _claim(jobs, job_id, settings.max_attempts)
    if job is None:
        return
    workdir = settings.job_work_dir / job_id
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        with _budget(jobs, job, settings), working_in(workdir):
            artifacts = _execute(job, settings, jobs, objects, workdir)
        done = Progress(step=job.progress.steps_total, steps_total=job.progress.steps_total, fraction=1.0,
                        message="done")
        _finish(jobs, job_id, JobStatus.succeeded, artifacts=artifacts, progress=done)
    except JobCancelled:
        _finish(jobs, job_id, JobStatus.cancelled)
    except SoftTimeLimitExceeded:
        _finish(jobs, job_id, JobStatus.failed, error=JobError(
            code=ErrorCode.time_limit, message=f"the job ran longer than {settings.soft_time_limit_s} s"))
    except ParetoError as e:
        log.warning("job %s failed: %s: %s", job_id, e.code, e.message)
        _finish(jobs, job_id, JobStatus.failed, error=JobError(code=e.code, message=without_paths(e.message)))
    except Exception as e:
        log.exception("job %s failed unexpectedly", job_id)
        _finish(jobs, job_id, JobStatus.failed, error=JobError(
            code=ErrorCode.internal_error, message=without_paths(f"unexpected {type(e).__name__}: {str(e)[:300]}")))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _budget(jobs: JobStore, job: Job, settings: Settings) -> Budget:
    """The job's CPU and memory budget and its cancellation, watched while it runs (workers/engine/budget.py)."""
    def cancelled() -> bool:
        current = jobs.load(job.id)
        return (current is None or current.cancel_requested or current.status is not JobStatus.running
                or current.attempts != job.attempts)

    def give_up(reason: ParetoError) -> None:
        if isinstance(reason, JobCancelled):
            _finish(jobs, job.id, JobStatus.cancelled)
        else:
            _finish(jobs, job.id, JobStatus.failed, error=JobError(code=reason.code, message=reason.message))

    return Budget(job.id, settings, cancelled, give_up)


@contextmanager
def working_in(folder: Path):
    """The job's folder as the current directory: what a library writes there (onnxruntime's symbolic shape
    inference writes `sym_shape_infer_temp.onnx` and its weights) stays in the job's folder and goes with it."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _execute(job: Job, settings: Settings, jobs: JobStore, objects: ObjectStore, workdir) -> list[Artifact]:
    def checkpoint(done: int, total: int, message: str, fraction: float | None = None) -> None:
        share = done / total if fraction is None else fraction
        current = jobs.set_progress(job.id, Progress(step=done, steps_total=total, fraction=round(share, 4),
                                                     message=message))
        if current.cancel_requested or current.status is not JobStatus.running:
            raise JobCancelled()

    assets = AssetStore(objects)
    model = assets.load(job.tenant, "models", job.model_id)
    source = objects.download_file(assets.file_key(job.tenant, "models", model.id, "model"),
                                   workdir / f"source.{model.format}")
    outcome = run_recipe(job, model, source, workdir, settings, checkpoint, objects, jobs.r)

    prefix = job_prefix(job.tenant, job.id)
    stored = []
    for name, item in outcome.artifacts.items():  # deterministic keys: a rerun overwrites
        key = f"{prefix}artifacts/{name}"
        if isinstance(item, Stored):
            size, sha256 = objects.copy(item.key, key)
        else:
            size, sha256 = item.stat().st_size, objects.upload_file(key, item, CONTENT_TYPES.get(item.suffix,
                                                                                                 OCTETS))
        stored.append(Artifact(name=name, key=key, size_bytes=size, sha256=sha256))
    report = outcome.report.model_dump(mode="json")
    report_path = workdir / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    sha256 = objects.upload_file(f"{prefix}report.json", report_path, "application/json")
    stored.append(Artifact(name="report.json", key=f"{prefix}report.json",
                           size_bytes=report_path.stat().st_size, sha256=sha256))
    return stored


def help_job(tenant: str, job_id: str, attempt: int) -> None:
    """A helper task: runs the job's ready candidates on this worker until none is left."""
    settings, jobs, objects = _stores()
    job = jobs.load(job_id)
    if job is None or job.tenant != tenant or job.status is not JobStatus.running or job.attempts != attempt:
        return
    fleet = Fleet(jobs.r, job_id, attempt, settings.node_lease_s, settings.worker_retry_s)
    workdir = settings.job_work_dir / f"{job_id}-helper-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _budget(jobs, job, settings), working_in(workdir):
            help_run(job, fleet, settings, jobs, objects, workdir)
    except JobCancelled:
        pass
    except BudgetExceeded as e:  # the job's budget holds on every worker: the coordinator stops at its next check
        _finish(jobs, job_id, JobStatus.failed, error=JobError(code=e.code, message=e.message))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def help_run(job: Job, fleet: Fleet, settings: Settings, jobs: JobStore, objects: ObjectStore, workdir) -> None:
    def checkpoint(_message: str) -> None:  # the coordinator reports progress; helpers only stop
        current = jobs.load(job.id)
        if (current is None or current.cancel_requested or current.status is not JobStatus.running
                or current.attempts != job.attempts):  # redelivered: this attempt's coordinator is gone
            raise JobCancelled()

    ws, idle_since = None, time.monotonic()
    while not fleet.closed() and time.monotonic() - idle_since < HELPER_IDLE_S:
        node = fleet.take()
        if node is None:
            time.sleep(POLL_S)
            continue
        checkpoint("")
        if ws is None:
            model = AssetStore(objects).load(job.tenant, "models", job.model_id)
            ws = attach(job, model, settings, objects, workdir)
        try:
            run_node(ws, fleet, node, checkpoint)
        except JobCancelled:
            raise
        except ParetoError as e:
            fleet.fail(node, e.code, e.message)
        idle_since = time.monotonic()
