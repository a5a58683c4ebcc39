"""The workers' side of observability: JSON logs with the job's id and tenant, step durations and GPU
memory written to Redis for the API's `/metrics` (core/metrics.py).

Connected to Celery's signals when the worker imports its task modules (workers/engine/runner.py imports this),
before Celery sets up logging; the pipeline calls `record_step` after each step.
Never lets a metrics write fail a job, and never touches CUDA unless the job already did (so the
parent process stays CUDA-free before it forks its pool).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from functools import lru_cache

import redis
from celery import signals

from core import logs, metrics
from core.errors import ParetoError
from core.ids import is_id, is_tenant
from core.jobstore import redis_client
from core.settings import get_settings

log = logging.getLogger("pareto.worker")
GPU_REFRESH_S = 15
GPU_TTL_S = 60  # a worker that stops refreshing (gone) drops out of /metrics after this
_tokens: dict[str, object] = {}  # task id -> its log context
_gpu_thread: list[threading.Thread] = []


@lru_cache
def _redis() -> redis.Redis | None:
    settings = get_settings()
    return redis_client(settings) if settings.redis_url else None


def _write(what: str, fn) -> None:
    try:
        r = _redis()
        if r is not None:
            fn(r)
    except (redis.RedisError, ParetoError) as e:
        log.warning("metrics: could not record %s: %s", what, e)


def record_step(step: str, seconds: float) -> None:
    """Called by the pipeline after each step: its duration, and the GPU memory it left."""
    log.info("step %s took %.3f s", step, seconds, extra={"step": step, "seconds": round(seconds, 3)})
    _write("a step duration", lambda r: metrics.record_step_seconds(r, step, seconds))
    publish_gpu_memory()


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def gpu_memory() -> dict[str, int] | None:
    """This process's GPU memory, if it has initialised CUDA (never initialises it itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    device = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(device)
    return {"device": device, "used_bytes": total - free, "total_bytes": total,
            "torch_allocated_bytes": torch.cuda.memory_allocated(device),
            "torch_peak_bytes": torch.cuda.max_memory_allocated(device)}


def publish_gpu_memory() -> None:
    memory = gpu_memory()
    if memory is None:
        return
    _write("GPU memory", lambda r: metrics.publish_gpu_memory(r, worker_name(), memory, GPU_TTL_S))
    if not _gpu_thread:  # keep it fresh while this process lives, also between jobs
        _gpu_thread.append(threading.Thread(target=_refresh_gpu, name="gpu-memory", daemon=True))
        _gpu_thread[0].start()


def _refresh_gpu() -> None:
    while True:
        time.sleep(GPU_REFRESH_S)
        memory = gpu_memory()
        if memory is not None:
            _write("GPU memory", lambda r, m=memory: metrics.publish_gpu_memory(r, worker_name(), m, GPU_TTL_S))


@signals.setup_logging.connect
def _setup_logging(loglevel=None, **_) -> None:
    logs.configure(loglevel or logging.INFO)
    logging.getLogger().handlers[0].addFilter(_quiet_quantizer)


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    """onnxruntime's quantizer gives its advice through the root logger (logging.warning): noise in a
    worker's logs, unless it is an error."""
    return record.levelno >= logging.ERROR or "onnxruntime/quantization" not in record.pathname.replace("\\", "/")


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, args=None, **_) -> None:
    """Every task of a job (the job's own, and its search trials) is called with (tenant, job_id, ...)."""
    if not args or len(args) < 2 or not (is_tenant(str(args[0])) and is_id(str(args[1]), "j")):
        return
    tenant, job_id = args[0], args[1]
    _tokens[task_id] = logs.open_context(job_id=job_id, tenant=tenant)
    log.info("job %s: task %s started", job_id, task.name if task else "?")


@signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_) -> None:
    token = _tokens.pop(task_id, None)
    if token is None:
        return
    log.info("job %s: its task ended (%s)", logs.fields().get("job_id"), state)
    publish_gpu_memory()
    try:
        logs.close_context(token)
    except ValueError:  # opened in another context (a pool that runs tasks elsewhere): nothing to undo here
        pass
