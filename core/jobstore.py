"""The job store: job records in Redis, mirrored to a durable manifest in S3 at every state change."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from core.errors import NotFound, Unavailable
from core.job import Job, JobStatus, Progress
from core.objectstore import ObjectStore, job_prefix
from core.settings import Settings

PREFIX = "pareto:"


def redis_client(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise Unavailable("REDIS_URL is not set; `pareto up` starts an embedded server and sets it")
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


def manifest_key(tenant: str, job_id: str) -> str:
    return job_prefix(tenant, job_id) + "job.json"


class JobStore:
    def __init__(self, r: redis.Redis, objects: ObjectStore):
        self.r = r
        self.objects = objects

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _index(tenant: str) -> str:
        return f"{PREFIX}jobs:{tenant}"

    def create(self, job: Job) -> Job:
        self._mirror(job)  # the durable record first: a job in Redis always has its manifest
        pipe = self.r.pipeline()
        pipe.set(self._key(job.id), json.dumps(job.manifest()))
        pipe.zadd(self._index(job.tenant), {job.id: 0})
        pipe.execute()
        return job

    def load(self, job_id: str) -> Job | None:
        raw = self.r.get(self._key(job_id))
        return None if raw is None else Job.from_manifest(json.loads(raw))

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.load(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"job {job_id} not found", code="job_not_found")
        return job

    def list(self, tenant: str, status: JobStatus | None, limit: int, cursor: str | None) -> list[Job]:
        """Newest first; `cursor` is the last id of the previous page. Ids sort by creation time."""
        upper = f"({cursor}" if cursor else "+"
        jobs: list[Job] = []
        while len(jobs) < limit:
            ids = self.r.zrevrangebylex(self._index(tenant), upper, "-", start=0, num=limit * 2)
            if not ids:
                break
            for raw_id in ids:
                job = self.load(raw_id.decode())
                if job and (status is None or job.status == status):
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            upper = f"({ids[-1].decode()}"
        return jobs

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Applies `change` atomically (optimistic lock on the record); mirrors state changes to S3."""
        key = self._key(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise NotFound(f"job {job_id} not found", code="job_not_found")
                    old = Job.from_manifest(json.loads(raw))
                    new = change(old)
                    pipe.multi()
                    pipe.set(key, json.dumps(new.manifest()))
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if (new.status, new.attempts, new.cancel_requested) != (old.status, old.attempts, old.cancel_requested):
            self._mirror(new)
        return new

    def transition(self, job_id: str, status: JobStatus, **changes) -> Job:
        return self.update(job_id, lambda job: job.moved_to(status, **changes))

    def set_progress(self, job_id: str, progress: Progress) -> Job:
        return self.update(job_id, lambda job: job.model_copy(update={"progress": progress}))

    def _mirror(self, job: Job) -> None:
        self.objects.put_json(manifest_key(job.tenant, job.id), job.manifest())
