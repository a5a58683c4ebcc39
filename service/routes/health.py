from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from core.errors import Unavailable
from service.deps import BackendsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(b: BackendsDep):
    """Readiness: Redis and the object store answer."""
    checks = {}
    try:
        b.r.ping()
        checks["redis"] = "ok"
    except RedisError as e:
        checks["redis"] = f"unavailable: {e}"
    try:
        b.objects.ping()
        checks["s3"] = "ok"
    except Unavailable as e:
        checks["s3"] = e.message
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
