"""Recovery after Redis lost its data: job records rebuilt from the manifests in S3.

Run on API start when Redis holds no job record at all, and by `pareto admin rebuild` at any time
(it restores only what is missing). See `JobStore.rebuild` for what becomes of queued and running jobs.
"""

from __future__ import annotations

import logging

from celery import Celery

from core.jobstore import PREFIX, JobStore
from core.queue import enqueue

log = logging.getLogger("pareto.recovery")
LOCK = f"{PREFIX}rebuild-lock"
LOCK_TTL_S = 600


def rebuild(jobs: JobStore, celery: Celery) -> dict[str, int]:
    return jobs.rebuild(lambda job: enqueue(celery, job))


def rebuild_if_empty(jobs: JobStore, celery: Celery) -> dict[str, int] | None:
    """Rebuilds when Redis has no job record (a fresh or wiped Redis); one process at a time."""
    if jobs.has_records():
        return None
    if not jobs.r.set(LOCK, "1", nx=True, ex=LOCK_TTL_S):
        log.info("another process is rebuilding the job records")
        return None
    try:
        counts = rebuild(jobs, celery)
    finally:
        jobs.r.delete(LOCK)
    if any(counts.values()):
        log.warning("Redis held no job records: rebuilt them from S3: %s", counts)
    return counts
