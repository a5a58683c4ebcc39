"""Errors that say who must act.

Each carries a stable `code` (what clients match on), the HTTP status the gateway answers with, and
whether it is the user's to fix. Workers store `code` and the message on a failed job; the gateway turns
them into problem+json. Nobody sees a bare traceback as the message.
"""

from __future__ import annotations

import re


class ParetoError(Exception):
    code = "internal_error"
    status = 500
    title = "Internal error"
    user_error = False  # True: the input is wrong; retrying will not help

    def __init__(self, message: str | None = None, *, code: str | None = None, **extra):
        super().__init__(message or self.title)
        self.message = message or self.title
        if code:
            self.code = code
        self.extra = extra


class Unauthorized(ParetoError):
    code, status, title, user_error = "unauthorized", 401, "Missing or invalid API key", True


class NotFound(ParetoError):
    code, status, title, user_error = "not_found", 404, "Not found", True


class Conflict(ParetoError):
    code, status, title, user_error = "conflict", 409, "Conflict", True


class PayloadTooLarge(ParetoError):
    code, status, title, user_error = "payload_too_large", 413, "Payload too large", True


class RequestTimeout(ParetoError):
    code, status, title, user_error = "request_timeout", 408, "Request timeout", True


class InvalidInput(ParetoError):
    code, status, title, user_error = "invalid_input", 422, "Invalid input", True


class InvalidModel(InvalidInput):
    code, title = "invalid_model", "Not a loadable model"


class InvalidDataset(InvalidInput):
    code, title = "invalid_dataset", "Not a usable dataset"


class InvalidRecipe(InvalidInput):
    code, title = "invalid_recipe", "Invalid recipe"


class TooManyRequests(ParetoError):
    """A key went over its rate limit; `retry_after_s` says when a request will be accepted again."""

    code, status, title, user_error = "rate_limited", 429, "Too many requests", True

    def __init__(self, message: str, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(ParetoError):
    """A dependency (Redis, S3) did not answer: transient, worth retrying."""

    code, status, title = "service_unavailable", 503, "A backing service is unavailable"


class JobCancelled(ParetoError):
    """Raised inside a worker when the job was cancelled; ends the job `cancelled`, not `failed`."""

    code, status, title, user_error = "cancelled", 409, "Job cancelled", True


class BudgetExceeded(ParetoError):
    """A job went over its CPU or memory budget (PARETO_JOB_CPU_S, PARETO_JOB_MEMORY_BYTES): the model or the
    recipe asks for more than this service gives one job."""

    code, status, title, user_error = "budget_exceeded", 422, "Over the job's budget", True


_ABSOLUTE_PATH = re.compile(r"""(?:^|(?<=[\s'"(\[=]))/(?:[\w.+-]+/)+([\w.+-]*)""")


def without_paths(message: str) -> str:
    """A message for the user: the worker's absolute file paths reduced to their file names."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(a folder)", message)
