"""Shared fixtures: a real Redis (found, or started), a real SeaweedFS (started), the API and a Celery
worker as processes, and the reference models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from cli import processes as P
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from tests.stack import Stack, free_port, free_port_block

TEST_REDIS_URL = os.environ.get("PARETO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")  # and the db below it
MAX_UPLOAD_BYTES = 128 * 1024 * 1024
WEBHOOK_SECRET = "test-webhook-secret"  # callbacks go to receivers the tests run on 127.0.0.1


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Redis and SeaweedFS for the whole session: (redis_url, s3_url, started processes)."""
    root = tmp_path_factory.mktemp("services")
    started = []
    redis_url = TEST_REDIS_URL
    if _answers(redis_url):
        redis.Redis.from_url(redis_url).flushdb()  # the test database only (db 15 by default)
    else:
        proc, redis_url = P.start_valkey(root, free_port())
        started.append(proc)
    proc, s3_url = P.start_seaweedfs(root, free_port_block(), DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, "pareto")
    started.append(proc)
    yield redis_url, s3_url, root
    P.stop_all(started, timeout=5)


@pytest.fixture(scope="session")
def stack(services, tmp_path_factory):
    redis_url, s3_url, _ = services
    s = Stack.start(tmp_path_factory.mktemp("stack"), redis_url, s3_url, workers=1, S3_BUCKET="pareto",
                    PARETO_MAX_UPLOAD_BYTES=MAX_UPLOAD_BYTES, PARETO_WEBHOOK_SECRET=WEBHOOK_SECRET,
                    PARETO_TARGET_WAIT_S=10,
                    PARETO_WEBHOOK_ALLOWLIST="127.0.0.1",
                    PARETO_RATE_LIMIT_PER_S=1000)  # tests share two keys; tests/test_security.py checks the limit
    yield s
    s.stop()


@pytest.fixture(scope="session")
def api(stack):
    """A client of tenant A for the whole session."""
    with stack.client("tenant-a") as c:
        yield c


@pytest.fixture(scope="session")
def digits_job(api, digits_cnn):
    """The digits CNN and all 1797 digits (its own train / held-out split marked in the dataset), uploaded."""
    from tests.helpers import upload_dataset, upload_model

    return upload_model(api, digits_cnn["onnx"], "onnx"), upload_dataset(api, digits_cnn["all"])["id"]


@pytest.fixture
def client(stack):
    with stack.client("tenant-a") as c:
        yield c


@pytest.fixture
def other_client(stack):
    with stack.client("tenant-b") as c:
        yield c


@pytest.fixture(scope="session")
def reference(request):
    """Builds (once, cached between runs) a reference model set from examples/reference.py."""
    import examples.reference as ref

    def build(name: str) -> dict[str, Path]:
        folder = Path(request.config.cache.mkdir(f"reference-{name}-v4"))
        writer = {"cnn": ref.write_digits_cnn, "minilm": ref.write_minilm}[name]
        files = {"cnn": ("digits-cnn.onnx", "digits-cnn.pt2", "digits-images.npz", "digits-all.npz"),
                 "minilm": ("minilm.onnx", "minilm.pt2", "sentences.npz")}[name]
        paths = dict(zip(("onnx", "pt2", "data", "all"), (folder / f for f in files), strict=False))
        if not all(p.exists() for p in paths.values()):
            writer(folder)
        return paths

    return build


@pytest.fixture(scope="session")
def digits_cnn(reference) -> dict[str, Path]:
    return reference("cnn")


@pytest.fixture(scope="session")
def minilm(reference, tmp_path_factory) -> dict[str, Path]:
    """all-MiniLM-L6-v2 (ONNX and .pt2) and 32 tokenized real sentences, to keep jobs short."""
    import numpy as np

    paths = dict(reference("minilm"))
    paths["all"] = paths["data"]  # all 256 sentences, for training
    small = tmp_path_factory.mktemp("minilm") / "sentences-32.npz"
    with np.load(paths["data"]) as data:
        np.savez(small, **{k: data[k][:32] for k in data.files})
    paths["data"] = small
    return paths


@pytest.fixture(scope="session")
def digits(request) -> tuple[Path, Path]:
    """The digits MLP (1.1 M parameters, trained on scikit-learn's digits) and its held-out data,
    built once and cached between runs."""
    from examples.digits import write_example

    folder = Path(request.config.cache.mkdir("digits-mlp-v1"))
    model, data = folder / "digits-mlp.onnx", folder / "digits.npz"
    if not (model.exists() and data.exists()):
        write_example(folder)
    return model, data
