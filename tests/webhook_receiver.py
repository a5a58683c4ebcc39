"""A real HTTP receiver for callbacks, on 127.0.0.1: it answers from a script of status codes ("answer"), or takes
the request and then hangs ("hang") or sends the start of an answer one byte at a time ("drip") until released or
for `for_s` seconds, and then answers 200."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses: list[int] | None = None, mode: str = "answer", for_s: float = 30):
        self.statuses = list(statuses or [])  # answered in order; 200 once used up
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived, self.released = threading.Event(), threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers), body))
                receiver.arrived.set()
                if mode == "drip":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    deadline = time.monotonic() + for_s
                    while not receiver.released.wait(0.2) and time.monotonic() < deadline:
                        self.wfile.write(b"a")  # every read gets a byte: no read ever times out
                    self.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
                    return
                if mode == "hang":
                    receiver.released.wait(for_s)
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, n: int, timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.requests

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
