"""What the benchmarks share: the reference models (built once into bench/.cache), and a chain of steps
applied and measured as a job does it (the same step implementations, the same probe process), then every
output's latency timed again side by side in one process with the probe's own session settings and timing."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.assets import TensorSpec  # noqa: E402
from core.recipe import Recipe, Target  # noqa: E402
from core.settings import Settings  # noqa: E402
from workers.engine.data import job_data  # noqa: E402
from workers.measure.bench import Bench, resolve_threads  # noqa: E402
from workers.steps import apply_step  # noqa: E402
from workers.steps.context import ModelHandle, StepContext  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
# Default side-by-side rounds (p50: the median round's) and timed runs per batch size in a round. The digits
# CNN's batch-1 time (tens of µs) drifts by up to 1.7x over seconds here: many runs a round, many rounds, side
# by side, and the median round rather than the luckiest: identical int8 graphs then come out within 5-9 % of
# each other (the lowest round left them up to 16 % apart). MiniLM's rounds take minutes.
ROUNDS = {"cnn": 9, "minilm": 5}
REPEATS = {"cnn": 300, "minilm": 20}


@dataclass
class Reference:
    name: str
    onnx: Path
    data: Path  # evaluation (and training) data
    specs: list[TensorSpec]
    quality: str  # what the table calls quality


def digits_cnn() -> Reference:
    from examples.reference import write_digits_cnn

    folder = CACHE / "digits-cnn"
    if not (folder / "digits-all.npz").exists():
        write_digits_cnn(folder)
    return Reference("digits CNN", folder / "digits-cnn.onnx", folder / "digits-all.npz",
                     [TensorSpec(name="x", dtype="float32", shape=["batch", 1, 8, 8])], "accuracy")


def minilm(sentences: int = 256) -> Reference:
    from examples.reference import write_minilm

    folder = CACHE / "minilm-v3"
    if not (folder / "sentences.npz").exists():
        write_minilm(folder, sentences)
    specs = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in ("input_ids", "attention_mask")]
    return Reference("all-MiniLM-L6-v2", folder / "minilm.onnx", folder / "sentences.npz", specs, "cosine")


@dataclass
class Row:
    model: str
    label: str
    size_bytes: int
    latency: dict[str, float]  # batch -> p50 ms
    quality: float
    seconds: float
    path: Path | None = None  # the measured file, for later rounds


def job_setup(ref: Reference, steps: list[dict], batches: list[int], repeats: int):
    """The job data and the Bench a job with `steps` on `ref` would have (the same split, the same probe)."""
    recipe = Recipe.model_validate({"steps": steps or [{"optimize_graph": {"level": "basic"}}],
                                    "target": {"batch_sizes": batches, "repeats": repeats, "warmup": 3}})
    data = job_data(ref.data, ref.specs, recipe)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    target: Target = recipe.target
    bench = Bench.of(data, work, target, resolve_threads(target, 0), ["CPUExecutionProvider"], None,
                     ["accuracy"] if data.task == "classification" else [])
    return recipe, data, bench, work


def _row(ref: Reference, label: str, bench: Bench, model: Path, baseline_outputs, seconds: float):
    metrics, outputs, _ = bench.run(Path(model), baseline_outputs)
    if ref.quality == "accuracy":
        quality = metrics.quality.get("accuracy", float("nan"))
    else:
        quality = metrics.fidelity.cosine if metrics.fidelity else 1.0
    latency = {b: v.p50 for b, v in metrics.latency_ms.items()}
    return Row(ref.name, label, metrics.size_bytes, latency, quality, seconds, Path(model)), outputs


def measure_chain(ref: Reference, label: str, steps: list[dict], batches: list[int], repeats: int,
                  baseline_outputs=None) -> tuple[Row, list]:
    """Applies `steps` to the reference model and measures the result like a job's candidate."""
    recipe, data, bench, work = job_setup(ref, steps, batches, repeats)
    handle, start = ModelHandle(ref.onnx), time.monotonic()
    teachers = {"baseline": ref.onnx}
    for i, step in enumerate(recipe.steps if steps else [], 1):
        ctx = StepContext(workdir=work / f"s{i}", settings=Settings(), inputs=ref.specs, data=data,
                          threads=bench.threads, batch_sizes=recipe.target.batch_sizes, teachers=dict(teachers))
        handle = apply_step(handle, step, ctx)
        teachers[str(i)] = handle.onnx_path
    return _row(ref, label, bench, handle.onnx_path, baseline_outputs, time.monotonic() - start)


def measure_onnx(ref: Reference, label: str, onnx_path: Path, batches: list[int], repeats: int,
                 baseline_outputs=None, seconds: float = 0.0) -> tuple[Row, list]:
    """Measures any ONNX file for `ref` (e.g. another tool's output) exactly as measure_chain measures a
    candidate: the same evaluation data, Bench settings, probe process and quality figure."""
    _, _, bench, _ = job_setup(ref, [], batches, repeats)
    return _row(ref, label, bench, onnx_path, baseline_outputs, seconds)


def remeasure(ref: Reference, rows: list[Row], rounds: int, repeats: int, batches: list[int]) -> None:
    """Every row's latency measured again side by side: in one process, each of `rounds` rounds times every
    file one after another at each batch size, starting at a different file each round, each time in a session
    made afresh as the probe makes it (workers/measure/probe.py); each p50 becomes the median round's. The
    machine is shared and its speed drifts over seconds (the digits CNN's fp32 batch-1 time here: 57 to
    100 µs from one minute to the next): files measured in separate processes at different times can differ
    by 1.3x with identical graphs, while side by side a slow spell slows every file of a round alike."""
    from workers.measure import probe

    print(f"  measuring every {ref.name} output side by side, {rounds} round(s) ...", flush=True)
    _, _, bench, _ = job_setup(ref, [], batches, repeats)
    specs = [bench.spec(row.path) for row in rows]
    arrays, whole = probe.eval_inputs(specs[0])
    p50s: list[dict[str, list[float]]] = [{b: [] for b in row.latency} for row in rows]
    for k in range(rounds):
        for b in batches:  # all files at one batch size, then the next: a round's batch-1 times lie seconds apart
            for i in [*range(k % len(rows), len(rows)), *range(k % len(rows))]:
                if str(b) in p50s[i]:  # a session made for these runs only (why: workers/measure/variants.py)
                    times = probe.timings(probe.runner(specs[i])[0], arrays, whole, b, bench.target.warmup,
                                          repeats)
                    p50s[i][str(b)].append(float(np.median(times)))
    for row, found in zip(rows, p50s, strict=True):
        row.latency = {b: float(np.median(values)) for b, values in found.items()}


def run_configs(models, repeats: int | None, only: str | None, rounds: int | None, batches=(1, 32)) -> None:
    """For each (key, reference builder, [(label, steps)]): every configuration built and measured, its latency
    measured again side by side in `rounds` rounds of `repeats` runs (else the model's ROUNDS and REPEATS; p50:
    the median round's), then the table."""
    rows, used = [], {}
    for key, ref, configs in models:
        if only and only != key:
            continue
        reference, outputs, mine, runs = ref(), None, [], repeats or REPEATS[key]
        for label, steps in configs:
            row, out = measure_chain(reference, label, steps, list(batches), runs, outputs)
            outputs = outputs if outputs is not None else out
            mine.append(row)
            print(f"  measured {row.model}: {label} ({row.seconds:.1f} s to build)", flush=True)
        used[reference.name] = rounds or ROUNDS[key], runs
        remeasure(reference, mine, rounds or ROUNDS[key], runs, list(batches))
        rows += mine
    print()
    over = ", ".join(f"{name} {n} rounds of {r} runs" for name, (n, r) in used.items())
    print(table(rows, list(batches)) + f"\n(p50: the median round's, side by side: {over})")


def table(rows: list[Row], batches: list[int]) -> str:
    base = {}
    speedups = " ".join(f"{'speedup b' + str(b):>11}" for b in batches)
    lines = [f"{'model':18} {'candidate':34} {'x smaller':>9} {speedups} {'quality':>9} {'p50 ms b1':>9}"]
    for r in rows:
        b = base.setdefault(r.model, r)
        speed = " ".join(f"{b.latency[str(x)] / r.latency[str(x)]:11.2f}" for x in batches)
        lines.append(f"{r.model:18} {r.label:34} {b.size_bytes / r.size_bytes:9.2f} {speed} {r.quality:9.4f} "
                     f"{r.latency[str(batches[0])]:9.3f}")
    return "\n".join(lines)


