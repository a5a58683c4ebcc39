"""`GET /v1/jobs/{id}/events`: a job's status and progress as Server-Sent Events.

The stream sends the job (the same JSON as `GET /v1/jobs/{id}`) at once, then again each time it
changes, and ends after the terminal state. The record is read from Redis every POLL_S, off the event
loop: one small GET per open stream, whichever replica serves it.

Events: `status` when the status changed (and first), `progress` when only the progress did, `error`
({code, message}) if the job store stopped answering or lost the job (the stream ends; poll instead).
A comment line every HEARTBEAT_S keeps proxies from closing an idle stream. A stream lasts at most
MAX_STREAM_S, and ends before the gateway's request timeout (PARETO_REQUEST_TIMEOUT_S); EventSource and
the SDK then connect again and get the job at once. One API key holds at most PARETO_MAX_STREAMS_PER_KEY
streams open on one API process; one more is 429 `too_many_streams`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import redis
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from core.errors import ErrorCode, ParetoError, TooManyRequests
from core.job import Job
from core.jobstore import JobStore
from service.deps import BackendsDep, TenantDep

router = APIRouter(tags=["jobs"])
log = logging.getLogger("pareto.api")
POLL_S = 0.5
HEARTBEAT_S = 15.0
RETRY_MS = 2000  # how long a disconnected EventSource waits before it reconnects
MAX_STREAM_S = 300.0


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_stream(jobs: JobStore, job: Job, lifetime_s: float) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    sent, seq, quiet = None, 0, 0.0
    ends = asyncio.get_running_loop().time() + lifetime_s
    while asyncio.get_running_loop().time() < ends:
        data = job.model_dump(mode="json")
        if data != sent:
            seq += 1
            kind = "status" if sent is None or sent["status"] != data["status"] else "progress"
            yield sse(kind, data, seq)
            sent, quiet = data, 0.0
        if job.status.terminal:
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
        if quiet >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        try:
            current = await run_in_threadpool(jobs.load, job.id)
        except (ParetoError, redis.RedisError) as e:
            log.warning("events of job %s: the job store did not answer: %s", job.id, e)
            yield sse("error", {"code": ErrorCode.service_unavailable, "message": "the job store did not answer; poll"})
            return
        if current is None:
            yield sse("error", {"code": ErrorCode.job_not_found,
                                "message": f"job {job.id} is no longer in the job store"})
            return
        job = current


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`status` and `progress` events, each with the job JSON; ends after "
                                    "the terminal state"}},
)
def job_events(job_id: str, tenant: TenantDep, b: BackendsDep, request: Request) -> StreamingResponse:
    """Live status and progress of a job, as Server-Sent Events."""
    job = b.jobs.get(tenant, job_id)  # 404 for unknown ids and other tenants' jobs, before streaming
    key_id, cap = request.state.key_id, b.settings.max_streams_per_key
    if _open.get(key_id, 0) >= cap:
        raise TooManyRequests(f"this API key has {cap} event streams open (PARETO_MAX_STREAMS_PER_KEY); close "
                              "one or poll GET /v1/jobs/{id}", retry_after_s=RETRY_MS // 1000,
                              code=ErrorCode.too_many_streams)
    lifetime = max(1.0, min(MAX_STREAM_S, b.settings.request_timeout_s - 5))
    return StreamingResponse(_counted(key_id, job_stream(b.jobs, job, lifetime)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_open: dict[str, int] = {}  # API key id -> event streams open on this process


async def _counted(key_id: str, stream: AsyncIterator[str]) -> AsyncIterator[str]:
    _open[key_id] = _open.get(key_id, 0) + 1
    try:
        async for chunk in stream:
            yield chunk
    finally:
        _open[key_id] -= 1
        if not _open[key_id]:
            del _open[key_id]
