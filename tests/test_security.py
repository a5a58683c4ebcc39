"""Security through the API, as a client (or an attacker) would meet it: hostile uploads refused with 422
before anything loads them, revocable and rate-limited keys, tenant isolation down to presigned URLs,
signed callbacks to allowed addresses only, and request limits while the request streams in."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.auth import key_id
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import problem, refused_upload, relu_model, upload_dataset, upload_model
from tests.hostile import planted_sample_inputs, rewrite, stack_global_pickle
from tests.stack import Stack, wait_job
from tests.webhook_receiver import Receiver
from workers.engine.webhooks import verify

# --------------------------------------------------------------------------------------------------
# hostile uploads: 422 with a stable code, in bounded time, and nothing listed
# --------------------------------------------------------------------------------------------------


def onnx_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def with_external(location: str | None) -> bytes:
    """A model with an initializer that declares external data at `location` (None: inline, for control)."""
    model = relu_model()
    t = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    if location is not None:
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "12")):
            t.external_data.add(key=k, value=v)
    model.graph.initializer.append(t)
    return onnx_bytes(model)


def test_inline_control_model_is_accepted(client):
    r = client.post("/v1/models", params={"format": "onnx"}, content=with_external(None))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "weights.bin", "sub/../../x",
                                      "C:\\Windows\\win.ini"])
def test_onnx_with_external_data_is_refused(client, location):
    body = refused_upload(client, with_external(location), "external_data")
    assert "outside the file" in body["detail"]


def test_truncated_and_malformed_protobufs_are_refused(client):
    good = with_external(None)
    for content in (good[: len(good) // 2], good[:-3], b"\x0a\xff\xff\xff\xff\x0f" + good, bytes(range(256)) * 64):
        refused_upload(client, content, "invalid_model")


def test_an_absurd_node_count_is_refused(client):
    from core.checks.model import MAX_NODES

    body = refused_upload(client, onnx_bytes(relu_model(MAX_NODES + 1)), "invalid_model")
    assert f"limit is {MAX_NODES}" in body["detail"]


@pytest.fixture(scope="module")
def pt2_archive(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("pt2") / "seq.pt2"
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.export.save(torch.export.export(seq, (torch.randn(3, 4),)), path)
    return path


def test_pt2_with_a_planted_pickle_is_refused(client, pt2_archive, tmp_path):

    marker = tmp_path / "ran"
    hostile = planted_sample_inputs(pt2_archive, tmp_path / "a.pt2", f": > {marker}")
    refused_upload(client, hostile.read_bytes(), "unsafe_pickle", fmt="pt2")
    evil = stack_global_pickle("builtins", "eval", "1")
    extra = rewrite(pt2_archive, tmp_path / "b.pt2", add={"seq/extra.pkl": evil})
    refused_upload(client, extra.read_bytes(), "unsafe_pickle", fmt="pt2")
    assert not marker.exists()
    assert client.post("/v1/models", params={"format": "pt2"}, content=pt2_archive.read_bytes()).status_code == 201


def test_pt2_zip_bomb_and_symlink_are_refused(client, pt2_archive, tmp_path):

    bomb = zipfile.ZipInfo("seq/extra/bomb")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    path = rewrite(pt2_archive, tmp_path / "bomb.pt2", add={bomb: bytes(256 * 1024 * 1024)})
    assert path.stat().st_size < 2 * 1024 * 1024
    refused_upload(client, path.read_bytes(), "archive_too_large", fmt="pt2")
    link = zipfile.ZipInfo("seq/extra/link")
    link.create_system, link.external_attr = 3, 0o120777 << 16
    path = rewrite(pt2_archive, tmp_path / "link.pt2", add={link: b"/etc/passwd"})
    refused_upload(client, path.read_bytes(), "unsafe_archive", fmt="pt2")


def test_npz_bomb_and_pickles_are_refused(client):
    buf = io.BytesIO()
    np.save(buf, np.zeros((64_000, 1000), np.float32))  # 256 MB of zeros: a few hundred KB deflated
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue())
    assert len(bomb.getvalue()) < 1024 * 1024
    body = refused_upload(client, bomb.getvalue(), "invalid_dataset", path="/v1/datasets")
    assert "bomb" in body["detail"]
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}, None], dtype=object))
    refused_upload(client, pickled.getvalue(), "invalid_dataset", path="/v1/datasets")


# --------------------------------------------------------------------------------------------------
# tenant isolation
# --------------------------------------------------------------------------------------------------

def test_datasets_are_isolated_between_tenants(client, other_client, digits):
    dataset = upload_dataset(client, digits[1])
    model_b = upload_model(other_client, digits[0])
    for method in ("GET", "DELETE"):
        problem(other_client.request(method, f"/v1/datasets/{dataset['id']}"), 404, "dataset_not_found")
    assert dataset["id"] not in {d["id"] for d in other_client.get("/v1/datasets").json()}
    r = other_client.post("/v1/jobs", json={"model_id": model_b["id"], "dataset_id": dataset["id"], "recipe": "int8"})
    problem(r, 404, "dataset_not_found")
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200


@pytest.mark.parametrize("bad", ["..", "../tenant-b", "m_..%2F..%2Ftenant-b", "%2e%2e",
                                 "m_0000000000000000000000/../x"])
def test_ids_that_try_to_leave_the_tenant_are_404(client, bad):
    for path in (f"/v1/models/{bad}", f"/v1/datasets/{bad}", f"/v1/jobs/{bad}", f"/v1/jobs/{bad}/artifacts"):
        assert client.get(path).status_code == 404


def test_a_presigned_url_cannot_be_edited_to_reach_another_object(client, other_client, digits):
    """The signature covers the key: the URL of tenant A's artifact, pointed at tenant B's model (or at
    anything else), is refused by S3 itself."""
    model = upload_model(client, digits[0])
    job = wait_job(client, client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"])
    assert job["status"] == "succeeded"
    url = next(a["url"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["name"] == "model.onnx")
    assert httpx.get(url, timeout=30).status_code == 200
    theirs = upload_model(other_client, digits[0])
    parts = urlsplit(url)
    for path in (f"/pareto/tenant-b/models/{theirs['id']}/model", f"/pareto/tenant-a/models/{model['id']}/model",
                 parts.path.replace("model.onnx", "../report.json")):
        edited = urlunsplit(parts._replace(path=path))
        r = httpx.get(edited, timeout=30)
        assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content, (path, r.status_code, r.text[:200])
    assert "X-Amz-Expires=" in url and int(url.split("X-Amz-Expires=")[1].split("&")[0]) <= 600


# --------------------------------------------------------------------------------------------------
# webhooks
# --------------------------------------------------------------------------------------------------

def test_callback_gets_the_terminal_state_signed_and_retried(client, digits):
    receiver = Receiver(statuses=[503])  # the first attempt fails: it is retried
    try:
        model = upload_model(client, digits[0])
        r = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "callback_url": receiver.url})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        requests = receiver.wait(2)
        assert len(requests) == 2, requests
        for path, headers, body in requests:
            assert path == "/hook" and headers["Content-Type"] == "application/json"
            assert verify(WEBHOOK_SECRET, headers["Pareto-Signature"], body)
            assert not verify("another-secret", headers["Pareto-Signature"], body)
            assert not verify(WEBHOOK_SECRET, headers["Pareto-Signature"], body + b" ")
            sent = json.loads(body)
            assert sent["id"] == job["id"] and sent["status"] == job["status"] == "succeeded"
            assert headers["Pareto-Event"] == "job.succeeded" and headers["Pareto-Job-Id"] == job["id"]
            assert "tenant" not in sent and "artifacts" not in sent
    finally:
        receiver.close()


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/hook", "http://192.168.0.10:8080/", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8000/", "http://127.0.0.2/", "http://0.0.0.0/", "http://[fe80::1]/", "http://100.64.0.1/",
    "ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "not a url",
])
def test_callbacks_to_private_addresses_are_refused_at_submit(client, digits, url):
    model = upload_model(client, digits[0])
    before = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    problem(client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "callback_url": url}), 422,
            "callback_url_refused")
    assert client.get("/v1/jobs", params={"limit": 100}).json()["items"] == before


# --------------------------------------------------------------------------------------------------
# keys: revocation and rate limit; request limits (an API of their own with small limits)
# --------------------------------------------------------------------------------------------------

KEYS = {"k1": "key-one-" + "x" * 20, "k2": "key-two-" + "y" * 20, "k3": "key-three-" + "z" * 20}


@pytest.fixture(scope="module")
def guarded(services, tmp_path_factory):
    redis_url, s3_url, _ = services
    s = Stack.start(tmp_path_factory.mktemp("guarded"), redis_url, s3_url, workers=0,
                    PARETO_API_KEYS=",".join(f"sec:{k}" for k in KEYS.values()),
                    PARETO_REVOKED_KEY_IDS=key_id(KEYS["k3"]), PARETO_RATE_LIMIT_PER_S=2, PARETO_RATE_LIMIT_BURST=5,
                    PARETO_MAX_JSON_BYTES=64 * 1024, PARETO_BODY_IDLE_TIMEOUT_S=2)
    yield s
    s.stop()


def as_key(stack: Stack, name: str) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {KEYS[name]}"}, timeout=30)


def admin(stack: Stack, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cli.main", "admin", *args], env={**os.environ, **stack.env},
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_rate_limit_per_key_is_429_with_retry_after(guarded):
    with as_key(guarded, "k1") as c1, as_key(guarded, "k2") as c2:
        answers = [c1.get("/v1/recipes") for _ in range(12)]
        codes = [r.status_code for r in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes  # a burst of 5, then 2/s
        limited = next(r for r in answers if r.status_code == 429)
        body = problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 2 and body["retry_after_s"] >= 1
        assert c2.get("/v1/recipes").status_code == 200  # another key has its own bucket
        time.sleep(int(limited.headers["Retry-After"]))
        assert c1.get("/v1/recipes").status_code == 200
        assert httpx.get(guarded.api_url + "/healthz").status_code == 200  # not limited


def test_revoked_keys_are_refused(guarded):
    with as_key(guarded, "k3") as c3:  # PARETO_REVOKED_KEY_IDS
        problem(c3.get("/v1/models"), 401, "unauthorized")
    with as_key(guarded, "k2") as c2:
        time.sleep(1)  # a fresh token bucket
        assert c2.get("/v1/models").status_code == 200
        kid = admin(guarded, "key-id", KEYS["k2"])
        assert kid == key_id(KEYS["k2"]) and KEYS["k2"] not in kid
        assert admin(guarded, "revoke-key", kid).endswith("revoked")
        deadline = time.monotonic() + 10
        while c2.get("/v1/models").status_code != 401:  # every replica re-reads the list within seconds
            assert time.monotonic() < deadline
            time.sleep(0.6)
        assert kid in admin(guarded, "revoked").splitlines()
        admin(guarded, "unrevoke-key", kid)
        time.sleep(2.5)
        assert c2.get("/v1/models").status_code == 200


def test_json_bodies_are_limited_while_streaming(guarded):
    with as_key(guarded, "k1") as c:
        time.sleep(3)  # a full bucket
        big = json.dumps({"model_id": "m_" + "0" * 22, "recipe": "int8", "callback_url": "x" * 100_000})
        problem(c.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"}), 413, "payload_too_large")

        def chunks():  # no Content-Length: refused once 64 KiB have arrived
            yield b'{"model_id": "'
            for _ in range(1000):
                yield b"0" * 1024
        problem(c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}), 413,
                "payload_too_large")


def test_a_stalled_body_times_out_with_408(guarded):
    port = urlsplit(guarded.api_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/models?format=onnx HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEYS["k1"].encode()
                  + b"\r\nContent-Length: 1000000\r\n\r\n" + b"\0" * 1000)
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):  # the API closes the connection after the answer
            answer += chunk
        assert time.monotonic() - started < 15
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
