"""HTTP with the service's manners: the API key on every API call (never on presigned S3 URLs), and
bounded retries on 429 and 503, waiting what `Retry-After` says (capped)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

import httpx

from sdk.errors import ApiError

RETRY_STATUSES = frozenset({429, 503})
Body = Callable[[], Iterable[bytes] | bytes] | None  # called once per attempt: a stream can be re-opened


def retry_after(response: httpx.Response, attempt: int, cap: float) -> float:
    """Seconds to wait before the next attempt: Retry-After (seconds or an HTTP date), else backoff."""
    value = response.headers.get("retry-after", "").strip()
    wait = None
    if value.replace(".", "", 1).isdigit():
        wait = float(value)
    elif value:
        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            wait = None
    if wait is None:
        wait = 0.5 * 2**attempt
    return min(cap, max(0.0, wait))


class Transport:
    def __init__(self, url: str, api_key: str, timeout: float, max_retries: int, max_retry_wait: float):
        self.api = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                headers={"Authorization": f"Bearer {api_key}", "User-Agent": "pareto-sdk/1"})
        self.plain = httpx.Client(timeout=timeout, follow_redirects=True)  # presigned URLs: no API key
        self.max_retries, self.max_retry_wait = max_retries, max_retry_wait

    def close(self) -> None:
        self.api.close()
        self.plain.close()

    def request(self, method: str, path: str, body: Body = None, **kwargs) -> httpx.Response:
        """An API call; raises ApiError for any 4xx/5xx that is left after the retries."""
        attempt = 0
        while True:
            if body is not None:
                kwargs["content"] = body()
            response = self.api.request(method, path, **kwargs)
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(retry_after(response, attempt, self.max_retry_wait))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise ApiError.from_response(response)
            return response

    @contextmanager
    def stream(self, method: str, url: str, api: bool = True, **kwargs):
        """A streamed response (retried like `request` before it starts); the body is read by the caller."""
        client = self.api if api else self.plain
        attempt = 0
        while True:
            with client.stream(method, url, **kwargs) as response:
                if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                    response.read()
                    wait = retry_after(response, attempt, self.max_retry_wait)
                elif response.status_code >= 400:
                    response.read()
                    raise ApiError.from_response(response)
                else:
                    yield response
                    return
            time.sleep(wait)
            attempt += 1
