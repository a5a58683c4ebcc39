"""Measures one model on the target, in a process of its own: `python -m workers.probe spec.json`.

A fresh process gives a clean peak-memory reading (VmHWM minus the resident size before the session
was made) and keeps a crashing model from taking the worker down. It runs the evaluation inputs
(outputs saved for fidelity and quality) and times each batch size after a warm-up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _feed(arrays: dict[str, np.ndarray], start: int, rows: int) -> dict[str, np.ndarray]:
    n = len(next(iter(arrays.values())))
    idx = np.arange(start, start + rows) % n
    return {k: v[idx] for k, v in arrays.items()}


def _session(spec: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(spec["model"], opts, providers=spec["providers"])


def _evaluate(session, arrays, chunk: int, fixed: bool) -> list[np.ndarray]:
    """Outputs for every sample, `chunk` at a time (a fixed batch size drops the incomplete tail)."""
    n = len(next(iter(arrays.values())))
    stop = n - n % chunk if fixed else n
    pieces = [session.run(None, {k: v[i : i + chunk] for k, v in arrays.items()}) for i in range(0, stop, chunk)]
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))] if pieces else []


def _time(session, arrays, batch: int, warmup: int, repeats: int) -> list[float]:
    feed = _feed(arrays, 0, batch)
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def measure(spec: dict) -> dict:
    arrays = dict(np.load(spec["inputs"], allow_pickle=False))
    rss_before = _status_kb("VmRSS")
    session = _session(spec)
    fixed = spec.get("fixed_batch")
    outputs = _evaluate(session, arrays, fixed or 32, bool(fixed))
    np.savez(spec["outputs"], *outputs)
    latency, skipped = {}, []
    for batch in spec["batch_sizes"]:
        if fixed and batch != fixed:
            skipped.append(f"batch {batch}: the model's batch dimension is fixed at {fixed}")
            continue
        times = _time(session, arrays, batch, spec["warmup"], spec["repeats"])
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        latency[str(batch)] = {"p50": float(p50), "p90": float(p90), "p99": float(p99)}
    last = max(latency, key=int) if latency else None
    return {
        "latency_ms": latency,
        "throughput_per_s": int(last) / (latency[last]["p50"] / 1000) if last else None,
        "peak_memory_bytes": max(0, _status_kb("VmHWM") - rss_before) * 1024,
        "providers": session.get_providers(),
        "notes": skipped,
    }


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    json.dump(measure(spec), sys.stdout)
