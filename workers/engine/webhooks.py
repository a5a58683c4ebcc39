"""The terminal state of a job, POSTed to its `callback_url` once the worker has stored it.

The body is the job as `GET /v1/jobs/{id}` shows it. Headers:
    Pareto-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(PARETO_WEBHOOK_SECRET, "<t>.<body>")>
    Pareto-Event: job.<status>
    Pareto-Job-Id: <id>
A receiver recomputes v1 over the raw body and refuses timestamps older than a few minutes (replays).

Delivery never holds the job's worker: `notify` (the runner's hook) only queues the job and returns; a few
daemon threads of the same process send the callbacks (SENDERS threads, at most QUEUE_SIZE callbacks
waiting; when full, the oldest waiting one is dropped and logged). One delivery (`deliver`) retries with
exponential backoff on connection errors, 429 and 5xx, PARETO_WEBHOOK_ATTEMPTS times at most, all within
PARETO_WEBHOOK_BUDGET_S: an attempt's timeout is PARETO_WEBHOOK_TIMEOUT_S or what is left of the budget if
less, an attempt still going at the end of the budget is cut off, and no backoff waits past it. The
address is checked again right before each attempt (DNS rebinding), and the request goes to the very
address that was checked. A pool process that exits cleanly first waits for its callbacks (`drain`, from
workers/app.py); a killed one loses those not sent yet. Nothing here raises: a failed callback never
changes a job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.callbacks import CallbackRefused, resolve_callback
from core.job import Job
from core.settings import Settings

log = logging.getLogger("pareto.webhooks")
MAX_BACKOFF_S = 30.0
SENDERS = 4  # threads per worker process: a few receivers that hang do not hold up the others' callbacks
QUEUE_SIZE = 1000  # callbacks waiting per worker process


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does (and what the tests use)."""
    fields = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        ts = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, ts, body), f"t={ts},v1={fields.get('v1', '')}")


def _pinned(url: str, address: str) -> str:
    """The URL with its host replaced by the checked address (the Host header keeps the name)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


class _Cutoff:
    """Shuts the attempt's socket down at the delivery's deadline. httpx's timeouts are per read, so a
    receiver that sends a byte now and then would otherwise hold a sender past the budget."""

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._expired = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def trace(self, event: str, info: dict) -> None:
        """httpx's trace extension: keeps its own handle on the connection's socket (a duplicate, so
        that wrapping it in TLS or closing the connection cannot make the handle name another socket)."""
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket").dup()
            if self._expired:
                self._cut()

    def _cut(self) -> None:
        with self._lock:
            self._expired = True
            if self._socket is not None:
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)  # wakes a read or write blocked on it
                except OSError:
                    pass

    def __enter__(self) -> _Cutoff:
        self._timer.start()
        return self

    def __exit__(self, *_) -> None:
        self._timer.cancel()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
            self._socket = None


def _attempt(url: str, body: bytes, headers: dict, settings: Settings, deadline: float) -> int | None:
    """One POST that ends by the deadline; the status code, or None when it could not be sent."""
    try:
        host, _, addresses = resolve_callback(url, settings)
    except CallbackRefused as e:
        log.warning("callback %s refused at send time: %s", url, e.message)
        raise
    left = deadline - time.monotonic()
    if left <= 0:  # the DNS look-up took what was left
        return None
    parts = urlsplit(url)
    host_header = parts.hostname + (f":{parts.port}" if parts.port else "")
    try:
        with (_Cutoff(left) as cutoff,
              httpx.Client(timeout=min(settings.webhook_timeout_s, left), follow_redirects=False,
                           trust_env=False) as client):
            extensions = {"trace": cutoff.trace, **({"sni_hostname": host} if parts.scheme == "https" else {})}
            r = client.post(_pinned(url, addresses[0]), content=body, headers={**headers, "Host": host_header},
                            extensions=extensions)
        return r.status_code
    except httpx.HTTPError as e:
        log.info("callback to %s failed: %s", url, e)
        return None


def _headers(job: Job, secret: str, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "User-Agent": "pareto-webhooks/1",
            "Pareto-Event": f"job.{job.status}", "Pareto-Job-Id": job.id,
            "Pareto-Signature": signature(secret, int(time.time()), body)}  # signed anew: a fresh timestamp


def deliver(job: Job, settings: Settings) -> bool:
    """POSTs the job's state to its callback_url, within PARETO_WEBHOOK_BUDGET_S; True once a receiver
    answered 2xx. Synchronous: `notify` runs it on a sender thread."""
    if not job.callback_url or not settings.webhook_secret:
        return False
    deadline = time.monotonic() + settings.webhook_budget_s
    body = json.dumps(job.model_dump(mode="json"), separators=(",", ":")).encode()
    wait = 1.0
    for attempt in range(1, settings.webhook_attempts + 1):
        try:
            status = _attempt(job.callback_url, body, _headers(job, settings.webhook_secret, body), settings,
                              deadline)
        except CallbackRefused:
            return False
        if status is not None and 200 <= status < 300:
            log.info("callback for job %s delivered (attempt %d)", job.id, attempt)
            return True
        if status is not None and status < 500 and status != 429:
            log.warning("callback for job %s refused by the receiver with %d; not retried", job.id, status)
            return False
        if attempt == settings.webhook_attempts:
            break
        if time.monotonic() + wait >= deadline:  # no attempt would be left after the wait
            log.warning("callback for job %s not delivered within its budget of %g s (%d attempts)",
                        job.id, settings.webhook_budget_s, attempt)
            return False
        time.sleep(wait)
        wait = min(MAX_BACKOFF_S, wait * 2)
    log.warning("callback for job %s not delivered after %d attempts", job.id, settings.webhook_attempts)
    return False


class _Sender:
    """The callbacks of this process, queued and sent by daemon threads started on first use."""

    def __init__(self, threads: int = SENDERS, capacity: int = QUEUE_SIZE):
        self._threads, self._capacity = threads, capacity
        self._waiting: deque[tuple[Job, Settings]] = deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0  # waiting or being sent
        self._started = False

    def submit(self, job: Job, settings: Settings) -> None:
        with self._lock:
            if len(self._waiting) >= self._capacity:
                # the oldest rather than the newest: whatever is sent is then sent soon after its job
                # ended, instead of every later job's callback being lost behind a queue that is stuck
                dropped, _ = self._waiting.popleft()
                self._unfinished -= 1
                log.warning("callback queue full (%d waiting): dropped the callback of job %s, the oldest",
                            self._capacity, dropped.id)
            self._waiting.append((job, settings))
            self._unfinished += 1
            self._start()
            self._work.notify()

    def _start(self) -> None:
        if not self._started:
            for i in range(self._threads):
                threading.Thread(target=self._send, name=f"pareto-webhooks-{i}", daemon=True).start()
            self._started = True

    def _send(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._waiting)
                job, settings = self._waiting.popleft()
            try:
                deliver(job, settings)
            except Exception:
                log.exception("callback for job %s failed", job.id)
            finally:
                with self._lock:
                    self._unfinished -= 1
                    self._idle.notify_all()

    def drain(self, timeout_s: float) -> int:
        """Waits until every callback is sent or given up, at most timeout_s; how many are left."""
        with self._lock:
            self._idle.wait_for(lambda: self._unfinished == 0, timeout_s)
            return self._unfinished


_sender = _Sender()


def _forget_parent_callbacks() -> None:
    """A forked child has none of its parent's threads: its callbacks are the parent's to send."""
    global _sender
    _sender = _Sender()


os.register_at_fork(after_in_child=_forget_parent_callbacks)


def notify(job: Job, settings: Settings) -> None:
    """The runner's hook: queues the callback and returns at once; never raises."""
    if not job.callback_url or not settings.webhook_secret:
        return  # most jobs: no slot in the queue for them
    try:
        _sender.submit(job, settings)
    except Exception:
        log.exception("callback for job %s not queued", job.id)


def drain(timeout_s: float) -> bool:
    """Waits for the queued callbacks to be sent (or given up), at most timeout_s; True when none is left."""
    left = _sender.drain(timeout_s)
    if left:
        log.warning("%d callbacks not sent within %g s", left, timeout_s)
    return left == 0
