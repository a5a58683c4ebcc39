"""Celery tasks: thin wrappers around the job runner."""

from __future__ import annotations

from core.queue import OPTIMIZE_TASK
from workers.app import app
from workers.runner import run_job


@app.task(name=OPTIMIZE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def optimize(tenant: str, job_id: str) -> None:
    run_job(tenant, job_id)
