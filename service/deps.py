"""What routes depend on, as typed dependencies. Built once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from core.jobstore import JobStore, redis_client
from core.objectstore import ObjectStore
from core.queue import celery_client
from core.settings import Settings
from service.auth import ApiKeys, bearer_token


@dataclass
class Backends:
    settings: Settings
    keys: ApiKeys
    objects: ObjectStore
    jobs: JobStore
    celery: Celery

    @classmethod
    def connect(cls, settings: Settings) -> Backends:
        objects = ObjectStore(settings)
        r = redis_client(settings)
        return cls(settings, ApiKeys(settings.api_keys), objects, JobStore(r, objects), celery_client(settings))


def backends(request: Request) -> Backends:
    return request.app.state.backends


def current_tenant(request: Request) -> str:
    return backends(request).keys.tenant_for(bearer_token(request.headers.get("authorization")))


BackendsDep = Annotated[Backends, Depends(backends)]
TenantDep = Annotated[str, Depends(current_tenant)]
