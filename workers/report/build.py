"""Assembles report v1 from measured candidates."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from core.recipe import Goal
from core.report import Candidate, Environment, Measurement, Report, VsBaseline
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
                      quality_delta=delta)


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


def build(job_id: str, baseline: Candidate, candidates: list[Candidate], goals: list[Goal],
          measurement: Measurement, result: str | None = None) -> Report:
    """`result`: the candidate the recipe's own steps produced, recommended when there are no goals."""
    for c in [baseline, *candidates]:
        c.goals = G.evaluate(c, baseline, goals)
        c.goals_met = all(r.met for r in c.goals)
        c.vs_baseline = vs_baseline(c, baseline)
        c.regressions = regressions(c, baseline) if c is not baseline else []
    objs = G.objectives(goals)
    meeting = [c for c in [baseline, *candidates] if c.goals_met]
    if not candidates:
        best = baseline
    elif goals or result is None:
        best = G.recommend(candidates, objs)
    else:  # no goals: the recipe's result is what was asked for
        best = next(c for c in candidates if c.id == result)
    return Report(
        job_id=job_id,
        environment=environment(),
        measurement=measurement,
        baseline=baseline,
        candidates=candidates,
        frontier=[c.id for c in G.frontier(meeting, objs)],
        recommended=best.id,
        goals_met=best.goals_met,
        regressions=[c.id for c in candidates if c.regressions],
    )
