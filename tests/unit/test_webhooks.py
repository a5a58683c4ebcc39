"""Callbacks: the URL policy (core/callbacks.py), signing, the check again at send time, and delivery off
the job's worker within a time budget."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time

import pytest

from core.callbacks import CallbackRefused, check_callback_url, resolve_callback
from core.errors import InvalidInput
from core.job import Job, JobStatus
from core.recipes import builtin_recipe
from core.settings import Settings
from tests.webhook_receiver import Receiver
from workers.engine import webhooks
from workers.engine.webhooks import _pinned, deliver, signature, verify


def settings(**kw) -> Settings:
    return Settings(**{"PARETO_WEBHOOK_SECRET": "s3cret", "PARETO_WEBHOOK_ATTEMPTS": 2, **kw})


def job(url: str, id: str = "j_0000000000000000000001") -> Job:  # noqa: A002 (the job's field)
    return Job(id=id, tenant="t", model_id="m_0000000000000000000001",
               recipe=builtin_recipe("int8"), callback_url=url).moved_to(JobStatus.running).moved_to(JobStatus.failed)


def test_signature_covers_timestamp_and_body():
    header = signature("k", 1_700_000_000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert verify("k", header, b'{"a":1}', now=1_700_000_100)
    assert not verify("k", header, b'{"a":2}', now=1_700_000_100)
    assert not verify("k", header, b'{"a":1}', now=1_700_001_000)  # too old: a replay
    assert not verify("k", header.replace("t=1700000000", "t=1700000050"), b'{"a":1}', now=1_700_000_100)
    assert not verify("k", "garbage", b"")


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://10.0.0.1/", "http://[::ffff:127.0.0.1]/",
                                 "http://169.254.169.254/", "http://localhost/", "gopher://1.1.1.1/"])
def test_private_addresses_are_refused_without_an_allowlist(url):
    with pytest.raises(CallbackRefused):
        resolve_callback(url, settings())


def test_the_allowlist_takes_addresses_ranges_and_names():
    assert resolve_callback("http://127.0.0.1:9/x", settings(PARETO_WEBHOOK_ALLOWLIST="127.0.0.1"))[2] == ["127.0.0.1"]
    assert resolve_callback("http://10.2.3.4/", settings(PARETO_WEBHOOK_ALLOWLIST="10.0.0.0/8"))[1] == 80
    assert resolve_callback("https://localhost/", settings(PARETO_WEBHOOK_ALLOWLIST="localhost"))[1] == 443
    assert resolve_callback("http://8.8.8.8/", settings())[2] == ["8.8.8.8"]  # public: no allowlist needed


def test_callbacks_need_a_secret():
    with pytest.raises(InvalidInput) as e:
        check_callback_url("http://8.8.8.8/", Settings(PARETO_WEBHOOK_SECRET=""))
    assert e.value.code == "webhooks_disabled"


def test_the_request_goes_to_the_checked_address():
    assert _pinned("http://hooks.example:8080/a?b=1", "10.0.0.7") == "http://10.0.0.7:8080/a?b=1"
    assert _pinned("https://h/", "2001:db8::1") == "https://[2001:db8::1]/"


def test_delivery_checks_the_address_again_at_send_time():
    """Allowed at submit, not any more when the job ends (DNS rebinding, or the allowlist changed):
    nothing is sent."""
    receiver = Receiver()
    try:
        assert not deliver(job(receiver.url), settings())
        assert receiver.requests == []
        assert deliver(job(receiver.url), settings(PARETO_WEBHOOK_ALLOWLIST="127.0.0.1"))
        (path, headers, body), = receiver.requests
        assert json.loads(body)["status"] == "failed" and verify("s3cret", headers["Pareto-Signature"], body)
    finally:
        receiver.close()


def test_retries_are_bounded_and_4xx_is_final():
    receiver = Receiver(statuses=[500, 500, 500])
    try:
        assert not deliver(job(receiver.url), settings(PARETO_WEBHOOK_ALLOWLIST="127.0.0.1"))
        assert len(receiver.requests) == 2  # PARETO_WEBHOOK_ATTEMPTS=2
        receiver.statuses, receiver.requests[:] = [404], []
        assert not deliver(job(receiver.url), settings(PARETO_WEBHOOK_ALLOWLIST="127.0.0.1"))
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


# --------------------------------------------------------------------------------------------------
# IPv6 addresses that embed IPv4 ones are judged by what they embed; refusals do not echo DNS answers
# --------------------------------------------------------------------------------------------------

def teredo(server: str, client: str) -> str:
    """A Teredo address (2001::/32): the server, flags, the obfuscated port and client address."""
    value = (0x20010000 << 96 | int(ipaddress.IPv4Address(server)) << 64 | 0x8000 << 48 | (0xFFFF ^ 3544) << 32
             | int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    return f"http://[{ipaddress.IPv6Address(value)}]/"


@pytest.mark.parametrize("url", [
    "http://[2002:7f00:1::]/", "http://[2002:a00:1::5]/", "http://[2002:a9fe:a9fe::]/",  # 6to4
    teredo("65.54.227.120", "127.0.0.1"), teredo("10.0.0.1", "8.8.8.8"),  # both sides must be public
    "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/",  # NAT64, well-known prefix
    "http://[64:ff9b:1::a00:1]/",  # NAT64, local-use prefix, 10.0.0.1 in the /96 layout
    "http://[64:ff9b:1:0:7f:0:100:0]/",  # 127.0.0.1 in the /64 layout: its last 32 bits read 1.0.0.0
    "http://[::7f00:1]/", "http://[::a00:1]/", "http://[::1]/", "http://[::]/",  # IPv4-compatible
    "http://[::ffff:a00:1]/", "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
])
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(url):
    with pytest.raises(CallbackRefused):
        resolve_callback(url, settings())


@pytest.mark.parametrize("url", ["http://[2002:808:808::1]/", teredo("65.54.227.120", "8.8.8.8"),
                                 "http://[64:ff9b::808:808]/", "http://[::808:808]/", "http://[::ffff:8.8.8.8]/"])
def test_ipv6_forms_of_public_ipv4_addresses_are_accepted(url):
    resolve_callback(url, settings())


def test_a_refusal_does_not_say_what_a_name_resolves_to(monkeypatch):
    internal = ["10.20.30.40", "2002:a14:1e28::1"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in internal])
    for answer in internal:
        internal[:] = [answer]
        with pytest.raises(CallbackRefused) as e:
            resolve_callback("http://hooks.example/", settings())
        assert answer not in e.value.message and "a14" not in e.value.message
        assert "'hooks.example' resolves to a private, loopback or link-local address" in e.value.message


def test_a_refusal_may_name_the_address_the_url_gave():
    with pytest.raises(CallbackRefused) as e:
        resolve_callback("http://10.20.30.40:8080/", settings())
    assert "10.20.30.40" in e.value.message


# --------------------------------------------------------------------------------------------------
# delivery off the job's worker, within PARETO_WEBHOOK_BUDGET_S
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def stalled():
    receiver = Receiver(mode="hang")
    yield receiver
    receiver.close()


@pytest.fixture
def sender(monkeypatch):
    """A sender of this test's own, so that no callback of another test is in its queue."""
    def make(**kw) -> webhooks._Sender:
        monkeypatch.setattr(webhooks, "_sender", webhooks._Sender(**kw))
        return webhooks._sender
    return make


LOCAL = {"PARETO_WEBHOOK_ALLOWLIST": "127.0.0.1"}


def test_notify_returns_at_once_and_the_callback_arrives_later(stalled, sender, caplog):
    sender()
    caplog.set_level(logging.INFO, logger="pareto.webhooks")
    started = time.perf_counter()
    webhooks.notify(job(stalled.url), settings(PARETO_WEBHOOK_TIMEOUT_S=30, **LOCAL))
    assert time.perf_counter() - started < 0.1  # the receiver hangs: the worker does not wait for it
    assert stalled.arrived.wait(10)
    assert not webhooks.drain(0.3)  # still waiting for the answer
    stalled.released.set()
    assert webhooks.drain(10)
    assert len(stalled.requests) == 1
    assert json.loads(stalled.requests[0][2])["status"] == "failed"
    assert "callback for job j_0000000000000000000001 delivered (attempt 1)" in caplog.text


def test_the_budget_bounds_a_delivery_to_a_hanging_receiver(stalled):
    started = time.monotonic()
    assert not deliver(job(stalled.url), settings(PARETO_WEBHOOK_BUDGET_S=2, PARETO_WEBHOOK_TIMEOUT_S=5,
                                                  PARETO_WEBHOOK_ATTEMPTS=5, **LOCAL))
    assert 1.9 < time.monotonic() - started < 2.5


def test_the_budget_bounds_a_receiver_that_answers_a_byte_at_a_time():
    """httpx's timeouts are per read: each byte restarts them."""
    receiver = Receiver(mode="drip", for_s=6)
    try:
        started = time.monotonic()
        assert not deliver(job(receiver.url), settings(PARETO_WEBHOOK_BUDGET_S=2, PARETO_WEBHOOK_TIMEOUT_S=1,
                                                       **LOCAL))
        assert time.monotonic() - started < 2.5
    finally:
        receiver.close()


def test_backoff_does_not_wait_past_the_budget():
    receiver = Receiver(statuses=[500] * 5)
    try:
        started = time.monotonic()
        assert not deliver(job(receiver.url), settings(PARETO_WEBHOOK_BUDGET_S=2.5, PARETO_WEBHOOK_ATTEMPTS=5,
                                                       **LOCAL))
        assert time.monotonic() - started < 1.5  # 500, wait 1 s, 500; a wait of 2 s would end past 2.5 s
        assert len(receiver.requests) == 2
    finally:
        receiver.close()


def test_a_full_queue_drops_the_oldest_waiting_callback(stalled, sender, caplog):
    sender(threads=1, capacity=1)
    receiver = Receiver()
    try:
        webhooks.notify(job(stalled.url, "j_000000000000000000000a"), settings(**LOCAL))
        assert stalled.arrived.wait(10)  # the only sender is busy
        for name in ("j_000000000000000000000b", "j_000000000000000000000c"):
            webhooks.notify(job(receiver.url, name), settings(**LOCAL))
        stalled.released.set()
        assert webhooks.drain(10)
        assert [json.loads(body)["id"] for _, _, body in receiver.requests] == ["j_000000000000000000000c"]
        assert "dropped the callback of job j_000000000000000000000b, the oldest" in caplog.text
    finally:
        receiver.close()


def test_jobs_without_a_callback_take_no_place_in_the_queue(sender):
    queue = sender(threads=1, capacity=1)
    webhooks.notify(job(None), settings())
    assert queue.drain(0) == 0


def test_a_pool_process_that_exits_cleanly_sends_its_callbacks_first(monkeypatch):
    from celery.signals import worker_process_shutdown

    import workers.app  # noqa: F401  (connects the handler)

    drained = []
    monkeypatch.setattr(webhooks, "drain", drained.append)
    worker_process_shutdown.send(sender=None, pid=1, exitcode=0)
    assert drained == [workers.app.get_settings().webhook_budget_s]
