"""Transient errors of Redis and S3, retried with bounded exponential backoff.

A call is retried while the error is transient (the server did not answer, timed out, or said "try
again later") and the time budget lasts; after that it raises `Unavailable` with a stable code, so a
worker fails the job clearly instead of leaving it `running`, and the gateway answers 503.
User errors (a missing key, a refused request) are never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from core.errors import ErrorCode, Unavailable

log = logging.getLogger("pareto.retry")
T = TypeVar("T")

_S3_RETRYABLE_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "500", "502", "503", "504",
})
_REDIS_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
_S3_TRANSIENT = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError,
                 BotoConnectionError)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, _REDIS_TRANSIENT + _S3_TRANSIENT):
        return True
    if isinstance(error, redis.ResponseError):  # a replica still loading its data after a restart
        return str(error).startswith(("LOADING", "TRYAGAIN", "MASTERDOWN"))
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in _S3_RETRYABLE_CODES or status >= 500
    return False


@dataclass(frozen=True)
class Backoff:
    """Retries for at most `budget_s` seconds, waiting `first_s`, then twice as long, up to `max_s`."""

    budget_s: float
    first_s: float = 0.2
    max_s: float = 5.0

    def call(self, fn: Callable[[], T], what: str, code: str = ErrorCode.storage_unavailable) -> T:
        deadline = time.monotonic() + self.budget_s
        wait, attempt = self.first_s, 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        f"{what}: still unavailable after {attempt} attempts in {self.budget_s:.0f} s "
                        f"({type(e).__name__}: {str(e)[:200]})", code=code) from e
                if attempt == 1 or attempt % 5 == 0:
                    log.warning("%s: %s; retrying (attempt %d, %.0f s left)", what, type(e).__name__, attempt, left)
                time.sleep(min(left, wait * random.uniform(0.5, 1.0)))  # jitter: replicas do not retry in step
                wait = min(self.max_s, wait * 2)


class RetryingClient:
    """A boto3 S3 client whose calls are retried by `backoff`. Listings are retried whole (a paginator
    that fails half-way starts again); signing URLs needs no network and is passed through."""

    _PASSTHROUGH = frozenset({"generate_presigned_url", "generate_presigned_post", "meta", "exceptions",
                              "can_paginate", "get_waiter"})

    def __init__(self, client, backoff: Backoff):
        self._client, self._backoff = client, backoff

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name == "get_paginator":
            return lambda op: _RetryingPaginator(attr(op), self._backoff, op)
        if name in self._PASSTHROUGH or name.startswith("_") or not callable(attr):
            return attr
        return lambda *args, **kwargs: self._backoff.call(lambda: attr(*args, **kwargs), f"S3 {name}")


class _RetryingPaginator:
    def __init__(self, paginator, backoff: Backoff, operation: str):
        self._paginator, self._backoff, self._operation = paginator, backoff, operation

    def paginate(self, **kwargs) -> list[dict]:
        return self._backoff.call(lambda: list(self._paginator.paginate(**kwargs)), f"S3 {self._operation}")
