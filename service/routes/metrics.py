"""`GET /metrics`: Prometheus scrapes it (no API key; totals over every tenant, nothing per tenant)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.deps import BackendsDep
from service.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(b: BackendsDep) -> Response:
    """Jobs by state, queue depth, step durations, upload bytes, worker GPU memory."""
    body = await run_in_threadpool(exposition, b.r)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
