"""The job store: job records in Redis, mirrored to a durable manifest in S3 at every state change."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis

from core.errors import ErrorCode, NotFound, Unavailable
from core.ids import is_id, is_tenant
from core.job import Job, JobError, JobStatus, Progress
from core.metrics import count_job_state
from core.objectstore import ObjectStore, job_prefix
from core.retry import Backoff
from core.settings import Settings

PREFIX = "pareto:"
QUEUED = PREFIX + "queued"  # ids of the jobs waiting for a worker
UNMIRRORED = f"{PREFIX}unmirrored"  # ids whose latest state could not be written to S3 yet
log = logging.getLogger("pareto.jobstore")


def redis_client(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise Unavailable("REDIS_URL is not set; `pareto up` starts an embedded server and sets it")
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


def manifest_key(tenant: str, job_id: str) -> str:
    return job_prefix(tenant, job_id) + "job.json"


class JobStore:
    def __init__(self, r: redis.Redis, objects: ObjectStore, retry_s: float | None = None):
        """`retry_s`: how long transient Redis errors are retried (default PARETO_WORKER_RETRY_S)."""
        self.r = r
        self.objects = objects
        self.backoff = Backoff(objects.settings.worker_retry_s if retry_s is None else retry_s)

    def _redis(self, fn, what: str):
        return self.backoff.call(fn, f"Redis {what}", code=ErrorCode.jobstore_unavailable)

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _index(tenant: str) -> str:
        return f"{PREFIX}jobs:{tenant}"

    def create(self, job: Job) -> Job:
        self._mirror(job)  # the durable record first: a job in Redis always has its manifest

        def write():  # a pipeline forgets its commands when it fails: built anew on each try
            pipe = self.r.pipeline()
            pipe.set(self._key(job.id), json.dumps(job.manifest()))
            pipe.zadd(self._index(job.tenant), {job.id: 0})
            if job.status is JobStatus.queued:
                pipe.sadd(QUEUED, job.id)
            count_job_state(pipe, None, job.status)
            pipe.execute()

        self._redis(write, "create")
        return job

    def load(self, job_id: str) -> Job | None:
        raw = self._redis(lambda: self.r.get(self._key(job_id)), "get")
        return None if raw is None else Job.from_manifest(json.loads(raw))

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.load(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"job {job_id} not found", code=ErrorCode.job_not_found)
        return job

    def list(self, tenant: str, status: JobStatus | None, limit: int, cursor: str | None) -> list[Job]:
        """Newest first; `cursor` is the last id of the previous page. Ids sort by creation time."""
        upper = f"({cursor}" if cursor else "+"
        jobs: list[Job] = []
        while len(jobs) < limit:
            ids = self._redis(lambda upper=upper: self.r.zrevrangebylex(self._index(tenant), upper, "-", start=0,
                                                                          num=limit * 2), "list")
            if not ids:
                break
            keys = [self._key(raw_id.decode()) for raw_id in ids]
            raws = self._redis(lambda keys=keys: self.r.mget(keys), "mget")  # one round trip per page
            for raw in raws:
                job = None if raw is None else Job.from_manifest(json.loads(raw))
                if job and (status is None or job.status == status):
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            upper = f"({ids[-1].decode()}"
        return jobs

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Applies `change` atomically (optimistic lock on the record); mirrors state changes to S3."""
        key = self._key(job_id)

        def attempt() -> tuple[Job, Job]:
            with self.r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        if raw is None:
                            raise NotFound(f"job {job_id} not found", code=ErrorCode.job_not_found)
                        old = Job.from_manifest(json.loads(raw))
                        new = change(old)
                        pipe.multi()
                        pipe.set(key, json.dumps(new.manifest()))
                        if new.status is not JobStatus.queued:
                            pipe.srem(QUEUED, job_id)
                        count_job_state(pipe, old.status, new.status)
                        pipe.execute()
                        return old, new
                    except redis.WatchError:
                        continue

        old, new = self._redis(attempt, "update")
        if (new.status, new.attempts, new.cancel_requested) != (old.status, old.attempts, old.cancel_requested):
            self._mirror_or_remember(new)
        return new

    def queued(self) -> list[Job]:
        """Every job still waiting for a worker, all tenants."""
        ids = [i.decode() for i in self._redis(lambda: self.r.smembers(QUEUED), "smembers")]
        return [job for job in map(self._load_or_skip, ids) if job is not None and job.status is JobStatus.queued]

    def _load_or_skip(self, job_id: str) -> Job | None:
        """One record that no longer reads (written by another version, say) must not stop a sweep."""
        try:
            return self.load(job_id)
        except ValueError as e:  # pydantic's ValidationError and json's decode errors are ValueErrors
            log.error("job record %s does not read: %s", job_id, e)
            return None

    def transition(self, job_id: str, status: JobStatus, **changes) -> Job:
        return self.update(job_id, lambda job: job.moved_to(status, **changes))

    def set_progress(self, job_id: str, progress: Progress) -> Job:
        return self.update(job_id, lambda job: job.model_copy(update={"progress": progress}))

    def _mirror(self, job: Job) -> None:
        self.objects.put_json(manifest_key(job.tenant, job.id), job.manifest())

    def _mirror_or_remember(self, job: Job) -> None:
        """A state change is committed in Redis; S3 down past the retry budget must not undo it (a worker
        that raised here would leave its job `running`). The id is remembered and mirrored later."""
        try:
            self._mirror(job)
        except Unavailable as e:
            log.error("job %s: manifest not written (%s); will retry at the next state change", job.id, e.message)
            self._redis(lambda: self.r.sadd(UNMIRRORED, job.id), "sadd")
            return
        self.remirror()

    def remirror(self) -> int:
        """Mirrors the jobs whose manifest could not be written earlier; returns how many were written."""
        done = 0
        for raw_id in self._redis(lambda: self.r.smembers(UNMIRRORED), "smembers"):
            job = self.load(raw_id.decode())
            try:
                if job is not None:
                    self._mirror(job)
            except Unavailable:
                break
            self._redis(lambda raw_id=raw_id: self.r.srem(UNMIRRORED, raw_id), "srem")
            done += 1
        return done

    # -- rebuild from S3 -----------------------------------------------------------------------------
    def has_records(self) -> bool:
        return self._redis(lambda: next(self.r.scan_iter(match=f"{PREFIX}job:*", count=1000), None),
                           "scan") is not None

    def rebuild(self, enqueue: Callable[[Job], None]) -> dict[str, int]:
        """Restores the job records missing from Redis from their manifests in S3, after Redis lost its data.

        Records still in Redis are left alone (and each record is created with SET NX), so this is safe to
        run at any time and from several processes. Restored jobs come back as their manifest says, except:
        - `queued`: enqueued again (the queue was lost with Redis);
        - `running`: `failed` with code `interrupted` (`cancelled` if a cancel was requested). Its worker's
          progress and queue message were lost, and a second run beside a worker that may still be going
          would overwrite its artifacts; that worker stops at its next checkpoint when it sees the state.
        Returns counts: restored, present, requeued, interrupted, unreadable.
        """
        counts = dict.fromkeys(("restored", "present", "requeued", "interrupted", "unreadable"), 0)
        for tenant in self.objects.child_prefixes(""):
            if not is_tenant(tenant):
                continue
            for job_id in self.objects.child_prefixes(f"{tenant}/jobs/"):
                if is_id(job_id, "j"):
                    counts[self._restore(tenant, job_id, enqueue)] += 1
        return counts

    def _restore(self, tenant: str, job_id: str, enqueue: Callable[[Job], None]) -> str:
        if self._redis(lambda: self.r.exists(self._key(job_id)), "exists"):
            return "present"
        try:
            job = Job.from_manifest(self.objects.get_json(manifest_key(tenant, job_id)) or {})
        except ValueError as e:
            log.error("job %s: unreadable manifest, not restored: %s", job_id, str(e)[:200])
            return "unreadable"
        if job.tenant != tenant or job.id != job_id:
            log.error("job %s: its manifest names another job or tenant; not restored", job_id)
            return "unreadable"
        outcome = "restored"
        if job.status is JobStatus.running:
            outcome = "interrupted"
            if job.cancel_requested:
                job = job.moved_to(JobStatus.cancelled)
            else:
                job = job.moved_to(JobStatus.failed, error=JobError(
                    code=ErrorCode.interrupted, message="the job was running when the job store lost its data; its "
                    "progress could not be recovered. Submit it again."))

        def write() -> bool:
            pipe = self.r.pipeline()
            pipe.set(self._key(job.id), json.dumps(job.manifest()), nx=True)
            pipe.zadd(self._index(job.tenant), {job.id: 0})
            return bool(pipe.execute()[0])

        if not self._redis(write, "restore"):
            return "present"  # another process restored it first
        if outcome == "interrupted":
            self._mirror_or_remember(job)
        elif job.status is JobStatus.queued:
            enqueue(job)
            outcome = "requeued"
        return outcome
