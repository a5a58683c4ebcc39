"""A large upload streams through the API in bounded memory, and what is stored is byte for byte what
was sent (bench/upload.py measures the same at 1 GiB, with throughput)."""

from __future__ import annotations

import pytest

from bench.upload import MiB, measure


@pytest.mark.slow
def test_a_200_mib_upload_grows_the_api_by_less_than_64_mib():
    r = measure(200, log=print, verify=True)
    assert r["size_bytes"] >= 200 * MiB
    assert r["max_growth_bytes"] < 64 * MiB, r
