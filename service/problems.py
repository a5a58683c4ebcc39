"""One place that turns errors into RFC 9457 problem+json: {type, title, status, detail, code, ...}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ErrorCode, ParetoError

log = logging.getLogger("pareto.api")
PROBLEM = "application/problem+json"


def problem(status: int, code: str, title: str, detail: str, headers: dict | None = None, **extra):
    body = {"type": f"https://pareto.dev/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _errors(exc: RequestValidationError) -> list[dict]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]


def install(app: FastAPI) -> None:
    @app.exception_handler(ParetoError)
    async def _pareto(request: Request, exc: ParetoError):
        if exc.status >= 500:
            log.error("request failed: %s %s: %s", request.method, request.url.path, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if getattr(exc, "headers", None):  # e.g. Retry-After on 429
            headers = {**(headers or {}), **exc.headers}
        return problem(exc.status, exc.code, exc.title, exc.message, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _errors(exc)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, ErrorCode.invalid_request, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed}.get(exc.status_code, ErrorCode.http_error)
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, ErrorCode.internal_error, "Internal error", "an unexpected error occurred; it was logged")
