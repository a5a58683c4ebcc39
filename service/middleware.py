"""Per-request observability, as plain ASGI middleware (upload bodies and event streams pass through
unbuffered):

- `RequestContext`: every response carries `X-Request-ID` (the client's, when it sent a sane one, else
  a new one); every log line of the request carries it, the job id of `/v1/jobs/{id}/...` paths and the
  tenant once the key is checked; one access line per request.
- `UploadMeter`: counts the bytes received on the upload routes (`pareto_upload_bytes_total`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs
from service.metrics import UPLOAD_BYTES

REQUEST_ID = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_JOB_PATH = re.compile(r"^/v1/jobs/(j_[0-9a-f]{22})(?:/|$)")
UPLOAD_PATHS = {"/v1/models": "models", "/v1/datasets": "datasets"}
access = logging.getLogger("pareto.access")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            presented = value.decode("latin-1")
            return presented if _SANE_ID.match(presented) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid, started = request_id(scope), time.perf_counter()
        response = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.update(status=message["status"], started=True)
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[REQUEST_ID] = rid
            await send(message)

        job = _JOB_PATH.match(scope["path"])
        with logs.context(request_id=rid, job_id=job.group(1) if job else None):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # The app's catch-all problem handler, answered here so that a 500 carries the id too.
                handler = scope["app"].exception_handlers.get(Exception) if "app" in scope else None
                if response["started"] or handler is None:
                    raise
                await (await handler(Request(scope), exc))(scope, receive, send_with_id)
            finally:
                access.info("%s %s %s", scope["method"], scope["path"], response["status"], extra={
                    "method": scope["method"], "path": scope["path"], "status": response["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2)})


class UploadMeter:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = UPLOAD_PATHS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if kind is None:
            return await self.app(scope, receive, send)
        counted = {"bytes": 0, "status": 500}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counted["bytes"] += len(message.get("body", b""))
            return message

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                counted["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, send_status)
        finally:
            outcome = "accepted" if counted["status"] == 201 else "refused"
            UPLOAD_BYTES.labels(kind, outcome).inc(counted["bytes"])


def configure_logs() -> None:
    """JSON lines for the API process: uvicorn's own messages too; its access log gives way to ours."""
    logs.configure(take_over=("uvicorn", "uvicorn.error"), silence=("uvicorn.access",))


def install(app: FastAPI) -> None:
    app.add_middleware(UploadMeter)
    app.add_middleware(RequestContext)  # added last: outermost, so its log context covers the rest
