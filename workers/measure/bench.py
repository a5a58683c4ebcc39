"""Measures a model the same way for the baseline and every candidate: counted from the file and run on
the target in a probe process (held to the job's budget), compared with the baseline's outputs on the same
inputs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import sandbox
from core.errors import BudgetExceeded, ErrorCode, ParetoError
from core.recipe import Target
from core.report import Fidelity, Latency, Metrics, Profile
from core.sandbox import Limits
from core.settings import get_settings
from workers.engine import budget
from workers.engine.data import JobData
from workers.measure.quality import cosine, quality, top1_agreement

PROBE_TIMEOUT_S = 1800
SIDE_BY_SIDE_ROUNDS = 5


def providers_for(target: Target) -> list[str]:
    """onnxruntime's execution providers for the target, best first; target_unavailable if this worker
    lacks the one the target names."""
    import onnxruntime as ort

    if target.device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = ["TensorrtExecutionProvider"] if target.accelerator == "tensorrt" else []
    wanted += ["CUDAExecutionProvider"]
    missing = [p for p in wanted if p not in ort.get_available_providers()]
    if missing:
        raise ParetoError(f"this worker has no {', '.join(missing)}", code=ErrorCode.target_unavailable)
    return [*wanted, "CPUExecutionProvider"]


def resolve_threads(target: Target, default: int) -> int:
    return target.threads or default or len(os.sched_getaffinity(0))


@dataclass
class Bench:
    """How every model of one job is measured: same inputs, same target, same settings."""

    workdir: Path
    inputs_path: Path  # .npz of the evaluation inputs
    target: Target
    threads: int
    providers: list[str]
    fixed_batch: int | None
    labels: np.ndarray | None = None
    sample_shapes: dict[str, list[int]] | None = None  # one sample's shape per input, for MACs
    metrics: list[str] = field(default_factory=list)  # quality metrics to compute against the labels
    classification: bool = False  # integer labels: top-1 agreement means something
    ran_on: list[str] = field(default_factory=list)  # what the probe reported running the baseline on
    unbatched: list[str] = field(default_factory=list)  # inputs fed whole on every run (no batch axis)

    @classmethod
    def of(cls, data: JobData, workdir: Path, target: Target, threads: int, providers: list[str],
           fixed_batch: int | None, metrics: list[str]) -> Bench:
        """The bench of a job's data: its evaluation inputs written where the probe reads them."""
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = workdir / "inputs.npz"
        np.savez(inputs, **data.eval.inputs, **data.eval.fixed)
        return cls(workdir, inputs, target, threads, providers, fixed_batch, data.eval.labels,
                   data.eval.sample_shapes(), metrics, data.task == "classification", unbatched=list(data.eval.fixed))

    def run(self, model: Path, reference: list[np.ndarray] | None) -> tuple[Metrics, list[np.ndarray], list[str]]:
        """Metrics of `model`, its outputs on the evaluation inputs, and notes (e.g. skipped batches)."""
        probe = self._probe(model)
        self.ran_on = self.ran_on or probe["providers"]
        outputs_file = np.load(probe.pop("outputs_path"), allow_pickle=False)
        outputs = [outputs_file[f"arr_{i}"] for i in range(len(outputs_file.files))]
        metrics = Metrics(
            **probe["static"],
            latency_ms={b: Latency(**v) for b, v in probe["latency_ms"].items()},
            throughput_per_s=probe["throughput_per_s"],
            peak_memory_bytes=probe["peak_memory_bytes"],
            quality=quality(outputs[0], self.labels, self.metrics) if outputs else {},
            fidelity=fidelity(reference[0], outputs[0], self.classification) if reference and outputs else None,
        )
        return metrics, outputs, probe["notes"]

    def side_by_side(self, models: dict[str, Path], rounds: int = SIDE_BY_SIDE_ROUNDS) -> dict[str, dict[str, dict]]:
        """Every model's p50 at each batch size, timed in interleaved rounds in one probe process
        (workers/measure/probe.py `side_by_side`), with the spread of the rounds."""
        batches = [self.fixed_batch] if self.fixed_batch else self.target.batch_sizes
        spec = {**self.spec(next(iter(models.values()))), "models": {k: str(v) for k, v in models.items()},
                "batch_sizes": batches, "rounds": rounds}
        spec_path = self.workdir / "side-by-side.probe.json"
        spec_path.write_text(json.dumps(spec))
        return in_sandbox("workers.measure.probe", [str(spec_path)], self.workdir / "side-by-side.scratch",
                          "the models could not be timed side by side", ErrorCode.model_run_failed, PROBE_TIMEOUT_S)

    def profiles(self, models: dict[str, Path]) -> dict[str, Profile]:
        """Every model's per-operator profile at the first batch size (workers/measure/profile.py), in one
        probe process."""
        batches = [self.fixed_batch] if self.fixed_batch else self.target.batch_sizes
        spec = {**self.spec(next(iter(models.values()))), "profile": {k: str(v) for k, v in models.items()},
                "batch_sizes": batches}
        spec_path = self.workdir / "profile.probe.json"
        spec_path.write_text(json.dumps(spec))
        found = in_sandbox("workers.measure.probe", [str(spec_path)], self.workdir / "profile.scratch",
                           "the models could not be profiled", ErrorCode.model_run_failed, PROBE_TIMEOUT_S)
        return {k: Profile(**v) for k, v in found.items()}

    def spec(self, model: Path) -> dict:
        """What the probe (workers/measure/probe.py) needs to measure `model` on this bench's target."""
        return {
            "model": str(model), "inputs": str(self.inputs_path),
            "outputs": str(self.workdir / f"{model.stem}.outputs.npz"),
            "batch_sizes": self.target.batch_sizes, "warmup": self.target.warmup,
            "repeats": self.target.repeats, "threads": self.threads, "providers": self.providers,
            "runtime": self.target.runtime, "device": self.target.device,
            "fixed_batch": self.fixed_batch, "sample_shapes": self.sample_shapes, "unbatched": self.unbatched,
        }

    def _probe(self, model: Path) -> dict:
        spec = self.spec(model)
        spec_path = self.workdir / f"{model.stem}.probe.json"
        spec_path.write_text(json.dumps(spec))
        result = in_sandbox("workers.measure.probe", [str(spec_path)], self.workdir / f"{model.stem}.scratch",
                            "the model could not be run on the target", ErrorCode.model_run_failed, PROBE_TIMEOUT_S)
        result["outputs_path"] = spec["outputs"]
        return result


def in_sandbox(module: str, args: list[str], scratch: Path, failure: str, code: str, wall_s: float) -> dict:
    """A worker's child process on the job's data, within the job's budget (core/sandbox.py), stopped at once
    when the job is cancelled or over budget (workers/engine/budget.py)."""
    s = get_settings()
    try:
        return sandbox.run(module, args, Limits(s.job_memory_bytes, s.job_cpu_s, wall_s), scratch, stop=budget.check)
    except sandbox.LimitExceeded as e:
        if e.which == "memory":
            raise BudgetExceeded(f"{failure}: it needed more than the job's {s.job_memory_bytes >> 20} MiB of "
                                 "memory (PARETO_JOB_MEMORY_BYTES)", code=ErrorCode.memory_budget_exceeded) from None
        if e.which == "cpu":
            raise BudgetExceeded(f"{failure}: it used more than the job's {s.job_cpu_s} s of CPU time "
                                 "(PARETO_JOB_CPU_S)", code=ErrorCode.cpu_budget_exceeded) from None
        raise ParetoError(f"{failure}: {e.message}", code=code) from None


def fidelity(reference: np.ndarray, output: np.ndarray, classification: bool) -> Fidelity:
    n = min(len(reference), len(output))
    diff = reference[:n].reshape(n, -1).astype(np.float64) - output[:n].reshape(n, -1).astype(np.float64)
    return Fidelity(top1_agreement=top1_agreement(reference, output) if classification else None,
                    cosine=cosine(reference, output), max_abs_error=float(np.abs(diff).max()))
