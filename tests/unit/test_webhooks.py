"""Callbacks: the URL policy (core/callbacks.py), signing, and the check again at send time."""

from __future__ import annotations

import json

import pytest

from core.callbacks import CallbackRefused, check_callback_url, resolve_callback
from core.errors import InvalidInput
from core.job import Job, JobStatus
from core.recipes import builtin_recipe
from core.settings import Settings
from tests.webhook_receiver import Receiver
from workers.webhooks import _pinned, deliver, signature, verify


def settings(**kw) -> Settings:
    return Settings(PARETO_WEBHOOK_SECRET="s3cret", PARETO_WEBHOOK_ATTEMPTS=2, **kw)


def job(url: str) -> Job:
    return Job(id="j_0000000000000000000001", tenant="t", model_id="m_0000000000000000000001",
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
