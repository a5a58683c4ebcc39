"""Quick in-process comparisons a step makes to choose between variants: fidelity to a reference model
on the job's samples, and latency on the target at each of its batch sizes. (The report's numbers come
from the probe.)"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.engine.data import Split, run_samples
from workers.measure.quality import agreement
from workers.steps.context import StepContext

SAMPLES = 64
ROUNDS = 15  # at batch 1; batch b gets ROUNDS // b rounds, at least MIN_ROUNDS (a MiniLM batch of 32: 0.3 s a run)
MIN_ROUNDS = 3
ROUND_RUNS = 4  # timed runs per round at least,
ROUND_S = 0.003  # and for at least this long: a model of some microseconds gets dozens of runs a round


@dataclass
class Trial:
    fidelity: float  # top-1 agreement for classifiers (integer labels), else mean cosine
    latency_ms: dict[int, float]  # batch size -> median ms


def session(path: Path, ctx: StepContext):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ctx.threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=ctx.providers)


def outputs(sess, samples: Split, n: int = SAMPLES, chunk: int = 16) -> np.ndarray:
    """The first output on the first `n` samples."""
    return run_samples(sess, samples, n, chunk)[0]


def latency(sess, samples: Split, batch: int = 1, runs: int = ROUND_RUNS, seconds: float = ROUND_S) -> float:
    """Median time in ms of one batch of `batch` samples, over at least `runs` runs and `seconds`, after a
    warm-up."""
    feed = samples.feed(np.arange(batch) % len(samples))
    for _ in range(max(1, 5 // batch)):  # a batch of 32 warms up in one run
        sess.run(None, feed)
    times: list[float] = []
    while len(times) < runs or sum(times) < seconds:
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def compare(reference: Path, candidates: dict[str, Path], ctx: StepContext, rounds: int = ROUNDS) -> dict[str, Trial]:
    """Each candidate's fidelity to `reference` and its latency at each of the target's batch sizes."""
    found = fidelities(reference, candidates, ctx)
    times = latencies(candidates, ctx, rounds)
    return {label: Trial(found[label], times[label]) for label in candidates}


def fidelities(reference: Path, candidates: dict[str, Path], ctx: StepContext) -> dict[str, float]:
    classification = ctx.data.task == "classification"
    expected = outputs(session(reference, ctx), ctx.samples)
    return {label: agreement(expected, outputs(session(path, ctx), ctx.samples), classification)
            for label, path in candidates.items()}


def latencies(candidates: dict[str, Path], ctx: StepContext, rounds: int = ROUNDS) -> dict[str, dict[int, float]]:
    """Each candidate's median latency at each of the target's batch sizes, measured side by side: in
    interleaved rounds, each starting at another candidate, so that load that comes and goes on the machine
    slows every candidate alike instead of whichever happened to be measured then; the median round is kept
    (the lowest, a single lucky round, let two near-identical int8 variants swap places from run to run). Each
    round makes every candidate's session afresh and drops it before the next one's: with every session alive
    at once, an idle session's thread pool slowed the next candidate for seconds at a time (digits CNN, 2
    threads: two int8 graphs a few bytes apart came out 0.76x to 1.29x of each other from one comparison to
    the next; made afresh, 0.95x to 1.13x at batch 1 and 0.98x to 1.00x at 32). A session costs some
    milliseconds to make (all-MiniLM-L6-v2 in int8: 50-80 ms)."""
    labels = list(candidates)
    counts = {b: max(MIN_ROUNDS, rounds // b) for b in ctx.batch_sizes}
    times: dict[str, dict[int, list[float]]] = {label: {b: [] for b in counts} for label in labels}
    for k in range(max(counts.values(), default=0)):
        for label in labels[k % len(labels):] + labels[: k % len(labels)]:
            sess = session(candidates[label], ctx)
            for batch, count in counts.items():
                if k < count:
                    times[label][batch].append(latency(sess, ctx.samples, batch))
            del sess
    return {label: {b: float(np.median(t)) for b, t in found.items()} for label, found in times.items()}


def slowness(trials: dict[str, Trial]) -> dict[str, float]:
    """For each candidate, how much slower than the fastest it is at the batch size where it falls furthest
    behind (1.0: the fastest at every batch size)."""
    batches = next(iter(trials.values())).latency_ms
    best = {b: min(t.latency_ms[b] for t in trials.values()) for b in batches}
    return {label: max(t.latency_ms[b] / best[b] for b in batches) for label, t in trials.items()}


def latency_text(trial: Trial) -> str:
    return ", ".join(f"{t:.3f} ms at batch {b}" for b, t in trial.latency_ms.items()) or "not timed"

