"""Workers advertise what they can serve (queues, device, execution providers) in Redis, refreshed while
they live; the gateway fails a queued job fast when no live worker has served its target for a while,
instead of letting it wait forever (and says which worker to start)."""

from __future__ import annotations

import json
import time

import redis

from core.errors import ErrorCode
from core.job import JobError, JobStatus
from core.queue import queue_for
from core.recipe import Target

KEY = "pareto:workers:"
TTL_S = 30


def advertise(r: redis.Redis, name: str, info: dict) -> None:
    r.set(KEY + name, json.dumps({**info, "name": name, "seen_at": time.time()}), ex=TTL_S)


def live(r: redis.Redis) -> list[dict]:
    keys = list(r.scan_iter(match=KEY + "*", count=1000))
    return [json.loads(v) for v in r.mget(keys) if v] if keys else []


def required_provider(target: Target) -> str:
    if target.device == "cpu":
        return "CPUExecutionProvider"
    return "TensorrtExecutionProvider" if target.accelerator == "tensorrt" else "CUDAExecutionProvider"


def can_serve(worker: dict, target: Target) -> bool:
    return queue_for(target.device) in worker.get("queues", []) and (
        target.runtime == "torch" or required_provider(target) in worker.get("providers", []))


def fail_unservable(jobs, r: redis.Redis, wait_s: int) -> list[str]:
    """Queued jobs older than wait_s that no live worker can serve: failed with target_unavailable."""
    workers, failed, now = live(r), [], time.time()
    for job in jobs.queued():
        target = job.recipe.target
        if now - job.created_at.timestamp() < wait_s or any(can_serve(w, target) for w in workers):
            continue
        message = (f"no live worker serves target device={target.device}"
                   f"{' / ' + required_provider(target) if target.runtime == 'onnxruntime' else ''} "
                   f"(queue {queue_for(target.device)}) and none has for {wait_s} s; start one "
                   f"(pareto worker --queues {queue_for(target.device)}) or submit for another target")
        try:
            error = JobError(code=ErrorCode.target_unavailable, message=message)
            jobs.transition(job.id, JobStatus.failed, error=error)
            failed.append(job.id)
        except Exception:  # it started or was cancelled meanwhile
            continue
    return failed
