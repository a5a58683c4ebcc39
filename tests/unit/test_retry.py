"""Transient errors are retried within a budget, then surface as Unavailable; others are not retried."""

from __future__ import annotations

import time

import pytest
import redis
from botocore.exceptions import ClientError, EndpointConnectionError

from core.errors import Unavailable
from core.objectstore import ObjectStore
from core.retry import Backoff, is_transient
from core.settings import Settings
from tests.stack import free_port


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_what_is_transient():
    assert is_transient(redis.ConnectionError()) and is_transient(redis.TimeoutError())
    assert is_transient(redis.ResponseError("LOADING Valkey is loading the dataset in memory"))
    assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient(client_error("SlowDown", 503)) and is_transient(client_error("InternalError", 500))
    assert not is_transient(client_error("NoSuchKey", 404)) and not is_transient(client_error("AccessDenied", 403))
    assert not is_transient(redis.ResponseError("WRONGTYPE")) and not is_transient(ValueError())


def test_a_transient_error_is_retried_until_it_passes():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("refused")
        return "ok"

    assert Backoff(5, first_s=0.01).call(flaky, "x") == "ok" and len(calls) == 3


def test_the_budget_bounds_the_wait_and_names_the_code():
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:
        Backoff(0.3, first_s=0.05).call(lambda: (_ for _ in ()).throw(redis.ConnectionError("down")), "Redis get",
                                        code="jobstore_unavailable")
    assert 0.3 <= time.monotonic() - started < 2
    assert e.value.code == "jobstore_unavailable" and "Redis get" in e.value.message


def test_other_errors_pass_at_once():
    calls = []

    def broken():
        calls.append(1)
        raise client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        Backoff(5).call(broken, "x")
    assert len(calls) == 1


def test_the_object_store_gives_up_on_an_unreachable_server_within_its_budget():
    store = ObjectStore(Settings(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"), retry_s=1)
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:
        store.get_json("t/jobs/j/job.json")
    assert e.value.code == "storage_unavailable" and time.monotonic() - started < 15
    url, _ = store.presigned_get("t/x", "x", 60)  # signing needs no server
    assert "X-Amz-Signature=" in url
