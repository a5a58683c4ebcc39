"""The GPU path (CUDA / TensorRT execution providers): runs only where onnxruntime has CUDA."""

from __future__ import annotations

import onnxruntime as ort
import pytest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                       reason="no CUDA execution provider on this machine"),
]


def test_fp16_and_int8_are_measured_on_the_gpu(digits_cnn):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from gpu import CONFIGS, measure
    from harness import Reference

    from core.assets import TensorSpec

    ref = Reference("digits CNN", digits_cnn["onnx"], digits_cnn["all"],
                    [TensorSpec(name="x", dtype="float32", shape=["batch", 1, 8, 8])], "accuracy")
    reference = None
    for _, steps in CONFIGS:
        metrics, outputs, _ = measure(ref, steps, "cuda", 10, reference)
        reference = reference if reference is not None else outputs
        assert metrics.latency_ms["1"].p50 > 0 and metrics.quality["accuracy"] > 0.9
