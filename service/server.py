"""The API server: uvicorn, with bounds on what a connection may hold before the app sees a request.

`python -m service.server --host H --port P` (what `pareto api` and `pareto up` run):
- a connection must send each request's headers within PARETO_HEADER_TIMEOUT_S, from when it opens or its
  request begins (uvicorn has no such limit: a client that never finishes its headers would hold its
  connection forever); after that the body's limits apply (service/limits.py);
- at most PARETO_API_CONCURRENCY connections and requests at once (503 past it), with a listen backlog of
  PARETO_API_BACKLOG;
- the open-file limit raised to the hard limit before the first connection.
"""

from __future__ import annotations

import argparse
import asyncio
import resource

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline on the headers of every request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(get_settings().header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def most_file_handles() -> None:
    """The soft limit on open files raised to the hard one: each connection is a file handle, and the
    default soft limit (often 1024) is reached long before PARETO_API_CONCURRENCY."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the Pareto API server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    s = get_settings()
    most_file_handles()
    uvicorn.run("service.app:app", host=args.host, port=args.port, http=HeaderDeadline, access_log=False,
                timeout_graceful_shutdown=10, limit_concurrency=s.api_concurrency, backlog=s.api_backlog)


if __name__ == "__main__":
    main()
