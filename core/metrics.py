"""The service's numbers that live in Redis, written by the job store and the workers, read by the API's
`/metrics`: jobs by state, step-duration histograms, worker GPU memory; and the Celery queue depths.

All totals are over every tenant. Nothing here imports prometheus_client: the exposition format is the
API's business (service/metrics.py).
"""

from __future__ import annotations

import bisect
import math

import redis

from core.job import JobStatus
from core.queue import QUEUES

KEY = "pareto:metrics:"  # under the job store's prefix
JOBS_BY_STATE = KEY + "jobs_by_state"  # hash: state -> number of jobs in it
STEP_SECONDS = KEY + "step_seconds"  # hash: "{step}|{le}" -> count in that bucket, "{step}|sum", "{step}|count"
GPU_MEMORY = KEY + "gpu:"  # + worker: hash of byte counts, expires unless the worker refreshes it
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)  # kombu's Redis transport: one list per priority


def count_job_state(pipe, old: JobStatus | None, new: JobStatus) -> None:
    """Queues the moves of one job between states on `pipe` (inside the job store's transaction)."""
    if old == new:
        return
    if old is not None:
        pipe.hincrby(JOBS_BY_STATE, str(old), -1)
    pipe.hincrby(JOBS_BY_STATE, str(new), 1)


def jobs_by_state(r: redis.Redis) -> dict[str, int]:
    raw = r.hgetall(JOBS_BY_STATE)
    counts = {k.decode(): int(v) for k, v in raw.items()}
    return {str(s): max(0, counts.get(str(s), 0)) for s in JobStatus}


def queue_depths(r: redis.Redis) -> dict[str, int]:
    """Messages waiting in each Celery queue (not those a worker has taken)."""
    pipe = r.pipeline(transaction=False)
    for q in QUEUES:
        pipe.llen(q)
        for p in PRIORITY_STEPS:
            pipe.llen(f"{q}{PRIORITY_SEP}{p}")
    lengths = pipe.execute()
    per_queue = 1 + len(PRIORITY_STEPS)
    return {q: sum(lengths[i * per_queue:(i + 1) * per_queue]) for i, q in enumerate(QUEUES)}


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def record_step_seconds(r: redis.Redis, step: str, seconds: float) -> None:
    bucket = STEP_BUCKETS[bisect.bisect_left(STEP_BUCKETS, seconds)]
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(STEP_SECONDS, f"{step}|{_le(bucket)}", 1)
    pipe.hincrby(STEP_SECONDS, f"{step}|count", 1)
    pipe.hincrbyfloat(STEP_SECONDS, f"{step}|sum", seconds)
    pipe.execute()


def step_seconds(r: redis.Redis) -> dict[str, dict]:
    """step -> {"buckets": [(le, cumulative count)], "count": n, "sum": seconds}."""
    raw = {k.decode(): v.decode() for k, v in r.hgetall(STEP_SECONDS).items()}
    steps = sorted({k.split("|", 1)[0] for k in raw})
    result = {}
    for step in steps:
        running, buckets = 0, []
        for bound in STEP_BUCKETS:
            running += int(raw.get(f"{step}|{_le(bound)}", 0))
            buckets.append((_le(bound), running))
        result[step] = {"buckets": buckets, "count": int(raw.get(f"{step}|count", 0)),
                        "sum": float(raw.get(f"{step}|sum", 0.0))}
    return result


def publish_gpu_memory(r: redis.Redis, worker: str, memory: dict[str, int], ttl_s: int) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.delete(GPU_MEMORY + worker)
    pipe.hset(GPU_MEMORY + worker, mapping={k: int(v) for k, v in memory.items()})
    pipe.expire(GPU_MEMORY + worker, ttl_s)
    pipe.execute()


def gpu_memory(r: redis.Redis) -> dict[str, dict[str, int]]:
    """worker -> {"used_bytes", "total_bytes", "torch_allocated_bytes", "torch_peak_bytes", "device"}."""
    result = {}
    for key in sorted(r.scan_iter(match=GPU_MEMORY + "*", count=500)):
        values = r.hgetall(key)
        if values:
            result[key.decode()[len(GPU_MEMORY):]] = {k.decode(): int(v) for k, v in values.items()}
    return result
