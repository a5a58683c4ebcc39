"""Assembles report v1 from measured candidates."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from core.recipe import Goal
from core.report import Candidate, Environment, Measurement, Report, VsBaseline
from workers import goals as G

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


def build(job_id: str, baseline: Candidate, candidates: list[Candidate], goals: list[Goal],
          measurement: Measurement) -> Report:
    for c in [baseline, *candidates]:
        c.goals = G.evaluate(c, baseline, goals)
        c.goals_met = all(r.met for r in c.goals)
        c.vs_baseline = vs_baseline(c, baseline)
    objs = G.objectives(goals)
    meeting = [c for c in [baseline, *candidates] if c.goals_met]
    if not candidates:
        best = baseline
    elif goals:
        best = G.recommend(candidates, objs)
    else:  # no goals: the recipe's result is what was asked for
        best = candidates[-1]
    return Report(
        job_id=job_id,
        environment=environment(),
        measurement=measurement,
        baseline=baseline,
        candidates=candidates,
        frontier=[c.id for c in G.frontier(meeting, objs)],
        recommended=best.id,
        goals_met=best.goals_met,
    )
