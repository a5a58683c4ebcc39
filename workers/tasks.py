"""Celery tasks: thin wrappers around the job runner."""

from __future__ import annotations

from celery.exceptions import Reject

from core.errors import Unavailable
from core.queue import OPTIMIZE_TASK, TRIALS_TASK
from workers.app import app
from workers.engine.runner import help_job, run_job


@app.task(name=OPTIMIZE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def optimize(tenant: str, job_id: str) -> None:
    try:
        run_job(tenant, job_id)
    except Unavailable as e:
        # The job store stayed down past PARETO_WORKER_RETRY_S, so the job's state could not be written:
        # requeue the message instead of acking it, so a later delivery (counted against the attempts
        # cap) ends the job rather than leaving it `running`.
        raise Reject(e.message, requeue=True) from e


@app.task(name=TRIALS_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def trials(tenant: str, job_id: str, attempt: int) -> None:
    help_job(tenant, job_id, attempt)
