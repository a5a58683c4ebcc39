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


def eval_inputs(spec: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The evaluation inputs: those with a batch axis, and those fed whole on every run."""
    arrays = dict(np.load(spec["inputs"], allow_pickle=False))
    fixed = {k: arrays.pop(k) for k in spec.get("unbatched", [])}
    return arrays, fixed


def _onnxruntime(spec: dict, opts=None):
    session = _session(spec, opts)
    return (lambda feed: session.run(None, feed)), session.get_providers()


def _session(spec: dict, opts=None):
    opts = opts or ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(spec["model"], opts, providers=spec["providers"])


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


def _evaluate(run, arrays, whole, chunk: int, fixed: bool) -> list[np.ndarray]:
    """Outputs for every sample, `chunk` at a time (a fixed batch size drops the incomplete tail); `whole`:
    the inputs without a batch axis, fed as they are."""
    n = len(next(iter(arrays.values()))) if arrays else 1
    stop = n - n % chunk if fixed else n
    pieces = [run({**{k: v[i : i + chunk] for k, v in arrays.items()}, **whole}) for i in range(0, stop, chunk)]
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))] if pieces else []


def timings(run, arrays, whole, batch: int, warmup: int, repeats: int) -> list[float]:
    feed = {**(_feed(arrays, 0, batch) if arrays else {}), **whole}
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        run(feed)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def measure(spec: dict) -> dict:
    arrays, whole = eval_inputs(spec)
    rss_before = _status_kb("VmRSS")
    run, providers, note = runner(spec)
    fixed = spec.get("fixed_batch")
    outputs = _evaluate(run, arrays, whole, fixed or 32, bool(fixed))
    np.savez(spec["outputs"], *outputs)
    latency, notes = {}, [note] if note else []
    for batch in spec["batch_sizes"]:
        if fixed and batch != fixed:
            notes.append(f"batch {batch}: the model's batch dimension is fixed at {fixed}")
            continue
        times = timings(run, arrays, whole, batch, spec["warmup"], spec["repeats"])
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


ROUND_S = 0.05  # each model's timed runs in a round last at least this long (and at least 3 runs)


def side_by_side(spec: dict) -> dict:
    """p50 of several models timed in interleaved rounds in this one process: each round makes each model's
    session afresh, in an order that starts one model later every round, and times `runs` runs at each batch
    size; load that comes and goes on the machine then slows every model alike. Returns, per model and batch
    size, the median of the rounds' medians and their spread ((highest - lowest) / median). The first model is the
    reference: every other model's p50 is the reference's over the median of the two's per-round ratios, and its
    spread that of the ratios, so that a round slowed by load elsewhere slows both sides of its ratio alike."""
    arrays, whole = eval_inputs(spec)
    models, batches, rounds = spec["models"], spec["batch_sizes"], spec["rounds"]
    runs = max(3, -(-spec["repeats"] // rounds))
    medians: dict[str, dict[int, list[float]]] = {m: {b: [] for b in batches} for m in models}
    order = list(models)
    for k in range(rounds):
        for name in order[k % len(order):] + order[: k % len(order)]:
            run, _, _ = runner({**spec, "model": models[name]})
            for batch in batches:
                times, started = [], time.perf_counter()
                for t in timings(run, arrays, whole, batch, 2, runs):
                    times.append(t)
                while time.perf_counter() - started < ROUND_S and len(times) < 10 * runs:
                    times += timings(run, arrays, whole, batch, 0, 1)
                medians[name][batch].append(float(np.median(times)))
            del run
    reference = medians[order[0]]
    out = {}
    for name, per_batch in medians.items():
        out[name] = {}
        for b, v in per_batch.items():
            ratios = v if name == order[0] else [t / r for t, r in zip(v, reference[b], strict=True)]
            scale = 1.0 if name == order[0] else float(np.median(reference[b]))
            middle = float(np.median(ratios))
            out[name][str(b)] = {"p50": middle * scale, "spread": float((max(ratios) - min(ratios)) / middle)}
    return out


def profiles(spec: dict) -> dict:
    """Each model's per-operator profile (workers/measure/profile.py) at the first batch size, on onnxruntime."""
    from workers.measure.profile import profile

    arrays, whole = eval_inputs(spec)
    batch = spec["batch_sizes"][0]
    feed = {**(_feed(arrays, 0, batch) if arrays else {}), **whole}
    scratch = Path.cwd()
    return {name: profile(lambda opts, m=model: _session({**spec, "model": m}, opts), feed, batch,
                          scratch).model_dump() for name, model in spec["profile"].items()}


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    mode = side_by_side if "models" in spec else profiles if "profile" in spec else measure
    json.dump(mode(spec), sys.stdout)
