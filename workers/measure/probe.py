"""Measures one model on the target, in a process of its own (core/sandbox.py, workers/measure/bench.py):
`python -m workers.measure.probe spec.json`.

A fresh process gives a clean peak-memory reading (VmHWM minus the resident size before the session
was made), keeps a crashing model from taking the worker down, and holds what reading the file costs
(parsing, shape inference for the MAC count) to the job's limits. It counts the file's parameters and
MACs, runs the evaluation inputs (outputs saved for fidelity and quality) and times each batch size after
a warm-up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from workers.measure.stats import static_metrics


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _feed(arrays: dict[str, np.ndarray], start: int, rows: int) -> dict[str, np.ndarray]:
    n = len(next(iter(arrays.values())))
    idx = np.arange(start, start + rows) % n
    return {k: v[idx] for k, v in arrays.items()}


def _onnxruntime(spec: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(spec["model"], opts, providers=spec["providers"])
    return (lambda feed: session.run(None, feed)), session.get_providers()


def _torch(spec: dict):
    """The ONNX graph run by torch eager (workers/graph/torch_module.py), on the target's device."""
    import onnx
    import torch

    from workers.graph.torch_module import OnnxModule

    torch.set_num_threads(spec["threads"])
    device = torch.device("cuda" if spec.get("device") == "cuda" and torch.cuda.is_available() else "cpu")
    module = OnnxModule(onnx.load(spec["model"])).eval().to(device)

    def run(feed):
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(feed[n])).to(device) for n in module.input_names])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return [o.cpu().numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run, [f"torch {torch.__version__} eager ({device.type})"]


def runner(spec: dict):
    """(run, providers, note): torch eager when the target asks for it and the graph allows it."""
    if spec.get("runtime") == "torch":
        from workers.graph.torch_module import UnsupportedOp

        try:
            return (*_torch(spec), None)
        except UnsupportedOp as e:
            return (*_onnxruntime(spec), f"not runnable on torch eager ({e}): measured on onnxruntime")
    return (*_onnxruntime(spec), None)


def _evaluate(run, arrays, chunk: int, fixed: bool) -> list[np.ndarray]:
    """Outputs for every sample, `chunk` at a time (a fixed batch size drops the incomplete tail)."""
    n = len(next(iter(arrays.values())))
    stop = n - n % chunk if fixed else n
    pieces = [run({k: v[i : i + chunk] for k, v in arrays.items()}) for i in range(0, stop, chunk)]
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))] if pieces else []


def timings(run, arrays, batch: int, warmup: int, repeats: int) -> list[float]:
    feed = _feed(arrays, 0, batch)
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        run(feed)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def measure(spec: dict) -> dict:
    arrays = dict(np.load(spec["inputs"], allow_pickle=False))
    rss_before = _status_kb("VmRSS")
    run, providers, note = runner(spec)
    fixed = spec.get("fixed_batch")
    outputs = _evaluate(run, arrays, fixed or 32, bool(fixed))
    np.savez(spec["outputs"], *outputs)
    latency, notes = {}, [note] if note else []
    for batch in spec["batch_sizes"]:
        if fixed and batch != fixed:
            notes.append(f"batch {batch}: the model's batch dimension is fixed at {fixed}")
            continue
        times = timings(run, arrays, batch, spec["warmup"], spec["repeats"])
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        latency[str(batch)] = {"p50": float(p50), "p90": float(p90), "p99": float(p99)}
    last = max(latency, key=int) if latency else None
    peak = max(0, _status_kb("VmHWM") - rss_before) * 1024  # read before the counting below adds its own
    return {
        "latency_ms": latency,
        "throughput_per_s": int(last) / (latency[last]["p50"] / 1000) if last else None,
        "peak_memory_bytes": peak,
        "providers": providers,
        "notes": notes,
        "static": static_metrics(Path(spec["model"]), spec.get("sample_shapes")),
    }


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    json.dump(measure(spec), sys.stdout)
