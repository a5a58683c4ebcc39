"""The terminal state of a job, POSTed to its `callback_url` once the worker has stored it.

The body is the job as `GET /v1/jobs/{id}` shows it. Headers:
    Pareto-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(PARETO_WEBHOOK_SECRET, "<t>.<body>")>
    Pareto-Event: job.<status>
    Pareto-Job-Id: <id>
A receiver recomputes v1 over the raw body and refuses timestamps older than a few minutes (replays).
Delivery is retried with exponential backoff on connection errors, 429 and 5xx, PARETO_WEBHOOK_ATTEMPTS
times at most; the address is checked again right before each attempt (DNS rebinding), and the request
goes to the very address that was checked. Nothing here raises: a failed callback never changes a job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.callbacks import CallbackRefused, resolve_callback
from core.job import Job
from core.settings import Settings

log = logging.getLogger("pareto.webhooks")
MAX_BACKOFF_S = 30.0


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


def _attempt(url: str, body: bytes, headers: dict, settings: Settings) -> int | None:
    """One POST; the status code, or None when it could not be sent."""
    try:
        host, _, addresses = resolve_callback(url, settings)
    except CallbackRefused as e:
        log.warning("callback %s refused at send time: %s", url, e.message)
        raise
    parts = urlsplit(url)
    host_header = parts.hostname + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client:
            r = client.post(_pinned(url, addresses[0]), content=body, headers={**headers, "Host": host_header},
                            extensions=extensions)
        return r.status_code
    except httpx.HTTPError as e:
        log.info("callback to %s failed: %s", url, e)
        return None


def deliver(job: Job, settings: Settings) -> bool:
    """POSTs the job's state to its callback_url; True once a receiver answered 2xx."""
    if not job.callback_url or not settings.webhook_secret:
        return False
    body = json.dumps(job.model_dump(mode="json"), separators=(",", ":")).encode()
    wait = 1.0
    for attempt in range(1, settings.webhook_attempts + 1):
        headers = {"Content-Type": "application/json", "User-Agent": "pareto-webhooks/1",
                   "Pareto-Event": f"job.{job.status}", "Pareto-Job-Id": job.id,
                   "Pareto-Signature": signature(settings.webhook_secret, int(time.time()), body)}
        try:
            status = _attempt(job.callback_url, body, headers, settings)
        except CallbackRefused:
            return False
        if status is not None and 200 <= status < 300:
            log.info("callback for job %s delivered (attempt %d)", job.id, attempt)
            return True
        if status is not None and status < 500 and status != 429:
            log.warning("callback for job %s refused by the receiver with %d; not retried", job.id, status)
            return False
        if attempt < settings.webhook_attempts:
            time.sleep(wait)
            wait = min(MAX_BACKOFF_S, wait * 2)
    log.warning("callback for job %s not delivered after %d attempts", job.id, settings.webhook_attempts)
    return False


def notify(job: Job, settings: Settings) -> None:
    """The runner's hook: never raises."""
    try:
        deliver(job, settings)
    except Exception:
        log.exception("callback for job %s failed", job.id)
