"""Structured logs: one JSON object per line, carrying `request_id`, `tenant` and `job_id` where known.

The API opens a log context per request (service/middleware.py) and binds the tenant once the key is
checked (service/deps.py); the workers open one per task (workers/telemetry.py). A context is one
mutable dict, so a field bound inside a thread-pool call (FastAPI runs sync dependencies and routes
there, on a copy of the context) is still seen by the rest of the request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("pareto_log_context", default=None)
# LogRecord's own attributes; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's message with terminal colours


def open_context(**fields) -> contextvars.Token:
    return _context.set({k: v for k, v in fields.items() if v is not None})


def close_context(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def context(**fields) -> Iterator[None]:
    token = open_context(**fields)
    try:
        yield
    finally:
        close_context(token)


def bind(**fields) -> None:
    """Adds fields to the open context (a request's or a task's); does nothing outside one."""
    current = _context.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def fields() -> dict:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int | str = logging.INFO, take_over: Iterable[str] = (), silence: Iterable[str] = (),
              stream=None) -> None:
    """JSON lines on stderr from the root logger. Loggers named in `take_over` (a server's own, with
    their own handlers) lose those handlers and propagate to the root instead; those in `silence` are
    turned off (something else logs what they would)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in take_over:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for name in silence:
        logging.getLogger(name).disabled = True
