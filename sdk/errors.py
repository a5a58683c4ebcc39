"""What the SDK raises. Every error the service answers is an `ApiError` carrying the problem+json `code`
(stable, what a program matches on), the HTTP status and the service's message."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, problem: dict | None = None):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body:
            return cls(response.status_code, str(body["code"]), str(body.get("detail") or body.get("title", "")), body)
        text = response.text.strip()[:500]
        return cls(response.status_code, f"http_{response.status_code}", text or response.reason_phrase)


class WaitTimeout(ApiError, TimeoutError):
    """`Client.wait` ran out of time; `job` is the last state seen."""

    def __init__(self, job_id: str, timeout: float, job=None):
        super().__init__(0, "wait_timeout", f"job {job_id} did not finish within {timeout:g} s")
        self.job = job


class ChecksumMismatch(ApiError):
    """A downloaded artifact's size or SHA-256 differs from what the service announced; the file is removed."""

    def __init__(self, name: str, expected: str, got: str):
        super().__init__(0, "checksum_mismatch", f"{name}: expected sha256 {expected}, downloaded {got}")
