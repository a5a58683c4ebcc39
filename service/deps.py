"""What routes depend on, as typed dependencies. Built once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from core import logs
from core.idempotency import IdempotencyStore
from core.jobstore import JobStore, redis_client
from core.objectstore import ObjectStore
from core.queue import celery_client
from core.settings import Settings
from service.auth import ApiKeys, bearer_token
from service.guard import KeyGuard


@dataclass
class Backends:
    settings: Settings
    keys: ApiKeys
    objects: ObjectStore
    jobs: JobStore
    celery: Celery
    r: redis.Redis  # the job store's, for what else the gateway keeps in Redis (metrics, workers, readiness)
    idempotency: IdempotencyStore
    guard: KeyGuard | None = None  # revocation and rate limit

    @classmethod
    def connect(cls, settings: Settings) -> Backends:
        objects = ObjectStore(settings, retry_s=settings.api_retry_s)  # a client waits: retry briefly
        r = redis_client(settings)
        return cls(settings, ApiKeys(settings.api_keys), objects, JobStore(r, objects, retry_s=settings.api_retry_s),
                   celery_client(settings), r, IdempotencyStore(r), KeyGuard(r, settings))


async def backends(request: Request) -> Backends:
    return request.app.state.backends  # async: no thread hop for an attribute read


async def current_tenant(request: Request) -> str:
    """Async, so a request costs no thread hop here; only the guard's Redis calls (the rate limit, the
    revocation list every few seconds) go to a thread."""
    b: Backends = request.app.state.backends
    tenant, key_id = b.keys.identify(bearer_token(request.headers.get("authorization")))
    if b.guard is not None:
        if b.guard.needs_redis():
            await run_in_threadpool(b.guard.check, key_id)
        else:
            b.guard.check(key_id)
    logs.bind(tenant=tenant)  # every log line of this request carries it
    request.state.key_id = key_id
    return tenant


BackendsDep = Annotated[Backends, Depends(backends)]
TenantDep = Annotated[str, Depends(current_tenant)]
