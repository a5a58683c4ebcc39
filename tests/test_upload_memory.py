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


@pytest.mark.slow
def test_a_200_mib_onnx_model_is_checked_outside_the_api(tmp_path):
    """The ONNX check parses the whole protobuf: it does so in a process of its own, so the gateway's memory
    does not grow with the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bench.service_stack import RssSampler, private_stack

    n = 200 * MiB // 4
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
                              [numpy_helper.from_array(np.ones(n, np.float32), "w")])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with private_stack(workers=0, PARETO_MAX_UPLOAD_BYTES=400 * MiB, PARETO_RATE_LIMIT_PER_S=0) as s, \
            s.client() as c:
        small = tmp_path / "small.onnx"  # the first upload imports and connects: not counted
        onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])), str(small))
        assert c.post("/v1/models", content=small.read_bytes()).status_code == 201
        with RssSampler(s.api.popen.pid) as rss, open(path, "rb") as f:
            r = c.post("/v1/models", content=iter(lambda: f.read(1 << 20), b""), timeout=300)
        assert r.status_code == 201, r.text
        assert r.json()["inputs"] == [{"name": "x", "dtype": "float32", "shape": [n], "batched": True,
                                       "value_range": None}]
        assert rss.growth < 64 * MiB, rss.growth
