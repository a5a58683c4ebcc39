"""Pieces of the SDK and of observability that need no running service."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core import logs
from sdk.sse import parse
from sdk.transport import retry_after
from service import middleware, problems


def test_sse_parse_skips_comments_and_joins_data_lines():
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 1", "event: status", "data: {\"a\":", "data: 1}", "",
             "data: plain", ""]
    events = list(parse(lines))
    assert [(e.event, e.data, e.id) for e in events] == [("status", '{"a":\n1}', "1"), ("message", "plain", None)]


def test_retry_after_seconds_date_default_and_cap():
    def response(value: str | None) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value} if value is not None else {})

    assert retry_after(response("2"), 0, 30) == 2
    assert retry_after(response("3600"), 0, 30) == 30
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8 <= retry_after(response(soon), 0, 30) <= 10
    assert retry_after(response(None), 0, 30) == 0.5 and retry_after(response(None), 3, 30) == 4
    assert retry_after(response("soon"), 1, 30) == 1


def test_json_lines_carry_the_context_bound_in_another_thread_context():
    stream = io.StringIO()
    logger = logging.getLogger("pareto.test-logs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # whatever other tests left on the root logger
    try:
        with logs.context(request_id="r1"):
            contextvars.copy_context().run(logs.bind, tenant="t1")  # as FastAPI's thread pool does
            logger.warning("hello %s", "world", extra={"job_id": "j_1", "status": 200})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside == {**inside, "message": "hello world", "level": "WARNING", "request_id": "r1", "tenant": "t1",
                      "job_id": "j_1", "status": 200, "logger": "pareto.test-logs"}
    assert "request_id" not in outside and "tenant" not in outside


def test_an_unexpected_error_is_a_problem_that_carries_the_request_id():
    app = FastAPI()
    problems.install(app)
    middleware.install(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    r = TestClient(app, raise_server_exceptions=False).get("/boom", headers={"X-Request-ID": "r-500"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "r-500"
    assert r.headers["content-type"] == "application/problem+json" and r.json()["code"] == "internal_error"


def test_the_sdk_and_client_commands_need_neither_torch_nor_the_service():
    code = "import sys, sdk, cli.client; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": ""}).stdout
    loaded = {m.split(".")[0] for m in out.strip().split(",")}
    assert not loaded & {"torch", "onnxruntime", "service", "workers", "fastapi", "boto3"}
