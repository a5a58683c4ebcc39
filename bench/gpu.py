"""The GPU path: fp16 and int8 through onnxruntime's CUDA and TensorRT execution providers, on both
reference models, measured by the service's probe (size, p50 latency at batch 1 and 32, quality).
Finishes in a few minutes on one GPU; where there is no GPU it says so and exits 0.

    .venv/bin/python bench/gpu.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import digits_cnn, minilm

from core.recipe import Recipe
from core.settings import Settings
from workers.engine.data import job_data
from workers.measure.bench import Bench, providers_for
from workers.steps import apply_step
from workers.steps.context import ModelHandle, StepContext

CONFIGS = [("fp32", []), ("fp16", [{"quantize": {"mode": "float", "dtype": "fp16"}}]),
           ("int8 static (QDQ)", [{"quantize": {"mode": "static", "fallback": False}}])]


def available() -> list[str]:
    import onnxruntime as ort

    return [a for a, ep in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider"))
            if ep in ort.get_available_providers()]


def measure(ref, steps, accelerator: str, repeats: int, reference):
    recipe = Recipe.model_validate({"steps": steps or [{"optimize_graph": {"level": "basic"}}], "target": {
        "device": "cuda", "accelerator": accelerator, "batch_sizes": [1, 32], "repeats": repeats}})
    data = job_data(ref.data, ref.specs, recipe)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    bench = Bench.of(data, work, recipe.target, 1, providers_for(recipe.target), None,
                     ["accuracy"] if data.task == "classification" else [])
    handle = ModelHandle(ref.onnx)
    for i, step in enumerate(recipe.steps if steps else [], 1):
        ctx = StepContext(workdir=work / f"s{i}", settings=Settings(), inputs=ref.specs, data=data,
                          device="cuda", providers=bench.providers, teachers={"baseline": ref.onnx},
                          batch_sizes=recipe.target.batch_sizes)
        handle = apply_step(handle, step, ctx)
    return bench.run(handle.onnx_path, reference)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    accelerators = available()
    if not accelerators:
        print("no CUDA or TensorRT execution provider on this machine: nothing to measure (GPU workers run this)")
        return 0
    print(f"{'model':18} {'accelerator':10} {'candidate':18} {'x smaller':>9} {'p50 b1 ms':>10} {'p50 b32 ms':>10} "
          f"{'quality':>8}")
    for ref in (digits_cnn(), minilm()):
        for accelerator in accelerators:
            base, reference = None, None
            for label, steps in CONFIGS:
                metrics, outputs, notes = measure(ref, steps, accelerator, args.repeats, reference)
                base, reference = base or metrics, reference if reference is not None else outputs
                quality = metrics.quality.get("accuracy") or (metrics.fidelity.cosine if metrics.fidelity else 1.0)
                lat = metrics.latency_ms
                print(f"{ref.name:18} {accelerator:10} {label:18} {base.size_bytes / metrics.size_bytes:9.2f} "
                      f"{lat['1'].p50:10.3f} {lat['32'].p50:10.3f} {quality:8.4f} {'; '.join(notes)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
