"""Structured logs: one JSON object per line, carrying `request_id`, `tenant` and `job_id` where known.

The API opens a log context per request (service/middleware.py) and binds the tenant once the key is
checked (service/deps.py); the workers open one per task (workers/engine/telemetry.py). A context is one
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


class RepeatLimit(logging.Filter):
    """At most `burst` records of one kind (logger, level, message) per `window_s`; the next one after a
    window says how many were left out. A flood of one error (a server out of file handles logs each refused
    connection) then costs a few lines a second, not hundreds of megabytes. The access log (one line per
    request by design) is not limited."""

    def __init__(self, burst: int = 10, window_s: float = 10.0, exempt: tuple[str, ...] = ("pareto.access",)):
        super().__init__()
        self.burst, self.window_s, self.exempt = burst, window_s, exempt
        self._seen: dict[tuple, list] = {}  # kind -> [window start, count in window, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.exempt:
            return True
        kind = (record.name, record.levelno, record.getMessage()[:200])
        state = self._seen.setdefault(kind, [record.created, 0, 0])
        if record.created - state[0] >= self.window_s:
            if state[2]:
                record.repeats_left_out = state[2]
            state[:] = [record.created, 0, 0]
            if len(self._seen) > 10_000:  # kinds are templates, but a bound costs nothing
                self._seen = {kind: state}
        state[1] += 1
        if state[1] > self.burst:
            state[2] += 1
            return False
        return True


def configure(level: int | str = logging.INFO, take_over: Iterable[str] = (), silence: Iterable[str] = (),
              stream=None) -> None:
    """JSON lines on stderr from the root logger, repeats limited (RepeatLimit). Loggers named in
    `take_over` (a server's own, with their own handlers) lose those handlers and propagate to the root
    instead; those in `silence` are turned off (something else logs what they would)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in take_over:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for name in silence:
        logging.getLogger(name).disabled = True
