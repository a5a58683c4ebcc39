"""Assembles report v1 from measured candidates."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from core.recipe import Goal
from core.report import Candidate, Environment, Latency, Measurement, Report, VsBaseline
from workers.measure import goals as G

PACKAGES = ("onnxruntime", "onnx", "numpy", "torch", "paretoml")


def environment() -> Environment:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return Environment(cpu=cpu, gpu=gpu_name(), versions=versions)


def gpu_name() -> str | None:
    """The GPU's name, asked of onnxruntime's CUDA provider list without initialising CUDA here."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return "cuda"


def vs_baseline(c: Candidate, base: Candidate) -> VsBaseline:
    speedup = None
    b50, c50 = G.value(base, "latency_p50_ms"), G.value(c, "latency_p50_ms")
    if b50 and c50:
        speedup = b50 / c50
    delta = {k: v - base.metrics.quality[k] for k, v in c.metrics.quality.items() if k in base.metrics.quality}
    return VsBaseline(size_ratio=c.metrics.size_bytes / base.metrics.size_bytes, speedup=speedup,
                      speedup_spread=_spread(c, base), quality_delta=delta)


NOISY = 0.15  # side-by-side rounds spread wider than this: the speed-up is said to be noisy


def _spread(c: Candidate, base: Candidate) -> float | None:
    first = next(iter(base.metrics.latency_ms), None)
    ours, theirs = c.metrics.latency_ms.get(first), base.metrics.latency_ms.get(first)
    return None if ours is None or theirs is None else _noise(ours, theirs)


def noise_notes(c: Candidate, base: Candidate) -> list[str]:
    """Where the machine was too loaded for a speed-up to be read closely, how loosely to read it."""
    said = []
    for batch, lat in c.metrics.latency_ms.items():
        ref = base.metrics.latency_ms.get(batch)
        spread = (_noise(lat, ref) or 0) if ref else 0
        if spread > NOISY:
            said.append(f"speed-up at batch {batch} is noisy: {ref.p50 / lat.p50:.2f}x, but the side-by-side rounds "
                        f"spread {spread:.0%} (the machine was loaded); read it as within about +-{spread / 2:.0%}")
    return said


SLOWER = 1.02  # p50 above the baseline's by more than this factor is reported as a regression


def regressions(c: Candidate, base: Candidate) -> list[str]:
    """Where the candidate measured slower than the baseline: never silent."""
    found = []
    for batch, lat in c.metrics.latency_ms.items():
        ref = base.metrics.latency_ms.get(batch)
        if ref and lat.p50 > ref.p50 * SLOWER:
            found.append(f"p50 latency at batch {batch}: {lat.p50 / ref.p50:.2f}x the baseline's "
                         f"({lat.p50:.3f} ms vs {ref.p50:.3f} ms)")
    return found


SMALLER = 0.99  # a file at least 1 % smaller counts as smaller (not a re-serialization's few bytes)
FASTER = 1.02  # a p50 below the baseline's by more than this factor (or half the rounds' spread) counts as faster


def _margin(a: Latency, b: Latency) -> float:
    """How much lower a p50 must be to count as faster: FASTER, or half the spread of the side-by-side rounds
    where the machine was noisier than that."""
    return max(FASTER, 1 + (_noise(a, b) or 0) / 2)


def _noise(candidate: Latency, baseline: Latency) -> float | None:
    """How uncertain the ratio of the two p50s is: the spread of the candidate's per-round ratios to the baseline
    when they were timed side by side, else the baseline's own."""
    return candidate.spread if candidate.spread is not None else baseline.spread


def loses_to_baseline(c: Candidate, base: Candidate) -> str | None:
    """Why the baseline dominates `c` (no smaller, no faster at any measured batch size, no better in
    quality), in words; None when `c` beats it somewhere."""
    if c.metrics.size_bytes < base.metrics.size_bytes * SMALLER:
        return None
    faster = [b for b, lat in c.metrics.latency_ms.items()
              if b in base.metrics.latency_ms and lat.p50 * _margin(lat, base.metrics.latency_ms[b])
              < base.metrics.latency_ms[b].p50]
    better = [k for k, v in c.metrics.quality.items() if v > base.metrics.quality.get(k, float("inf")) + 1e-9]
    if faster or better:
        return None
    return (f"{c.id}: {c.metrics.size_bytes / base.metrics.size_bytes:.2f}x the baseline's size, no faster at any "
            "measured batch size and no better in quality")


def build(job_id: str, baseline: Candidate, candidates: list[Candidate], goals: list[Goal],
          measurement: Measurement, result: str | None = None) -> Report:
    """`result`: the candidate the recipe's own steps produced, recommended when there are no goals."""
    for c in [baseline, *candidates]:
        c.goals = G.evaluate(c, baseline, goals)
        c.goals_met = all(r.met for r in c.goals)
        c.vs_baseline = vs_baseline(c, baseline)
        c.regressions = regressions(c, baseline) if c is not baseline else []
        if c is not baseline:
            c.notes += [n for n in noise_notes(c, baseline) if n not in c.notes]
    objs = G.objectives(goals)
    meeting = [c for c in candidates if c.goals_met]
    lost = {c.id: why for c in candidates if (why := loses_to_baseline(c, baseline))}
    useful = [c for c in candidates if c.id not in lost]
    if not useful:
        best = baseline
    elif goals or result is None:
        best = G.recommend(useful, objs)
    else:  # no goals: the recipe's result is what was asked for, unless the baseline beats it
        best = next((c for c in useful if c.id == result), baseline)
    return Report(
        job_id=job_id,
        environment=environment(),
        measurement=measurement,
        baseline=baseline,
        candidates=candidates,
        frontier=[baseline.id, *(c.id for c in G.frontier([baseline, *meeting], objs) if c is not baseline)],
        recommended=best.id,
        goals_met=best.goals_met,
        regressions=[c.id for c in candidates if c.regressions],
        why_baseline=list(lost.values()) if best is baseline else [],
    )
