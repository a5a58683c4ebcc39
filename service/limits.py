"""Request limits enforced while the request streams in, before any route runs (pure ASGI middleware).

- `/v1/` requests are authenticated from their headers before a byte of their body is read: an unknown or
  missing key gets 401 and the connection is closed (a client without a key cannot hold connections open
  by sending bodies slowly). Revocation and the rate limit are checked by the routes' dependency.
- Bodies of everything but the two upload routes are read here, at most PARETO_MAX_JSON_BYTES: 413 as soon
  as a declared or received size crosses it, without reading the rest. Uploads stream through to the
  route, which enforces PARETO_MAX_UPLOAD_BYTES the same way (service/uploads.py).
- A body that stalls for PARETO_BODY_IDLE_TIMEOUT_S between two chunks, or that takes longer in all than
  PARETO_BODY_TIMEOUT_S (uploads: that plus the time PARETO_UPLOAD_MIN_BYTES_PER_S allows for what has
  arrived): 408. A slow client cannot hold a connection and a spool file forever.
- A request other than an upload that has not started its answer within PARETO_REQUEST_TIMEOUT_S: 504
  (a streamed answer, such as job events, may then go on).
Header size and keep-alive are bounded by uvicorn (h11's 64 KiB incomplete-event limit, --timeout-keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from core.errors import ErrorCode, RequestTimeout, Unauthorized
from core.settings import Settings
from service.auth import ApiKeys, bearer_token
from service.problems import problem

UPLOAD_ROUTES = frozenset({"/v1/models", "/v1/datasets"})


class _TooLarge(Exception):
    pass


class RequestLimits:
    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings
        self.keys = ApiKeys(settings.api_keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith("/v1/"):
            try:
                self.keys.tenant_for(bearer_token(_header(scope, b"authorization")))
            except Unauthorized as e:
                return await self._refuse(scope, receive, send, 401, e.code, e.title, e.message,
                                          {"WWW-Authenticate": "Bearer"})
        s = self.settings
        upload = scope["method"] == "POST" and scope["path"] in UPLOAD_ROUTES
        receive_with_timeout = _deadlines(receive, s, s.upload_min_bytes_per_s if upload else None)
        if upload:
            return await self.app(scope, receive_with_timeout, send)

        limit = s.max_json_bytes
        declared = _header(scope, b"content-length") or ""
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, receive, send, 413, ErrorCode.payload_too_large, "Payload too large",
                                      f"the request body ({int(declared)} bytes) is larger than {limit} bytes")
        try:
            replay = await self._read_body(receive_with_timeout, limit)
        except _TooLarge:
            return await self._refuse(scope, receive, send, 413, ErrorCode.payload_too_large, "Payload too large",
                                      f"the request body is larger than {limit} bytes")
        except RequestTimeout as e:
            return await self._refuse(scope, receive, send, 408, e.code, e.title, e.message)

        answering = asyncio.Event()

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                answering.set()
            await send(message)

        # The limit is on the time to the first byte of the answer: a stream (job events) may go on.
        task = asyncio.ensure_future(self.app(scope, replay, tracking_send))
        waiter = asyncio.ensure_future(answering.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, timeout=s.request_timeout_s,
                                        return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on the request: so does the app
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return await self._refuse(scope, receive, send, 504, ErrorCode.request_timeout, "Request timeout",
                                      f"the request took longer than {s.request_timeout_s:g} s")
        await task

    @staticmethod
    async def _read_body(receive, limit: int):
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            size += len(message.get("body", b""))
            if size > limit:
                raise _TooLarge
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        pending = [first]

        async def replay():
            return pending.pop() if pending else await receive()

        return replay

    @staticmethod
    async def _refuse(scope, receive, send, status, code, title, detail, headers: dict | None = None):
        await problem(status, code, title, detail, headers={"Connection": "close", **(headers or {})})(
            scope, receive, send)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def _deadlines(receive, s: Settings, min_rate: int | None):
    """`receive` held to the idle limit between chunks and to a total deadline for the whole body: for an
    upload (min_rate set), the deadline grows with what has arrived, at min_rate bytes per second."""
    started, received, body_done = time.monotonic(), 0, False

    async def receive_with_timeout():
        nonlocal received, body_done
        if body_done:  # after the body: disconnect notices, wait as long as it takes
            return await receive()
        total = s.body_timeout_s + (received / min_rate if min_rate else 0)
        left = started + total - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, min(s.body_idle_timeout_s, left)))
        except TimeoutError:
            if left <= s.body_idle_timeout_s:
                raise RequestTimeout(f"the request body took longer than {total:g} s"
                                     + (f" (uploads: {s.body_timeout_s:g} s plus 1 s per {min_rate} bytes)"
                                        if min_rate else "")) from None
            raise RequestTimeout(f"the request body stalled for more than {s.body_idle_timeout_s:g} s") from None
        received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return receive_with_timeout
