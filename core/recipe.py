"""Recipe v1: the ordered steps, the optional search and goals, and the target the result is measured on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.steps import Step

MAX_BATCH = 1024
MAX_DIMS = 8


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(Strict):
    """Where the result will run. Every latency in the report is measured there."""

    device: Literal["cpu", "cuda"] = "cpu"
    runtime: Literal["onnxruntime"] = "onnxruntime"
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1, max_length=8)
    input_shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Fixes dynamic dimensions for generated inputs and benchmarks; the batch dimension "
        "is replaced by each of batch_sizes.",
    )
    warmup: int = Field(10, ge=0, le=1000, description="Untimed runs before timing.")
    repeats: int = Field(50, ge=5, le=20000, description="Timed runs per batch size.")
    threads: int = Field(0, ge=0, le=256, description="Intra-op threads; 0 = the worker's setting.")

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > MAX_BATCH for b in v):
            raise ValueError(f"batch sizes must be between 1 and {MAX_BATCH}")
        return sorted(set(v))

    @field_validator("input_shapes")
    @classmethod
    def _shapes(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, shape in v.items():
            if len(shape) > MAX_DIMS or any(d < 1 or d > 65536 for d in shape):
                raise ValueError(f"input_shapes[{name!r}]: at most {MAX_DIMS} dims, each 1..65536")
        return v


# Metrics goals may name; "quality" is the first label-based quality metric, else fidelity cosine.
HIGHER_IS_BETTER = ("quality", "fidelity.cosine", "fidelity.top1_agreement", "throughput_per_s")
LOWER_IS_BETTER = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "size_bytes", "size_gzip_bytes",
                   "params", "nonzero_params", "macs", "peak_memory_bytes", "fidelity.max_abs_error")
LOWER_QUALITY = ("mse", "mae")  # quality.<name> metrics where lower is better


def higher_is_better(metric: str) -> bool:
    if metric.startswith("quality.") and metric.split(".", 1)[1] in LOWER_QUALITY:
        return False
    return metric.startswith("quality") or metric in HIGHER_IS_BETTER


class Goal(Strict):
    """A constraint (max_degradation / threshold) or an objective (minimize / maximize) on one metric."""

    metric: str = Field(description="quality, quality.<name>, fidelity.cosine, latency_p50_ms, size_bytes, ...")
    max_degradation: float | None = Field(None, ge=0, description="Largest allowed drop from the baseline.")
    relative: bool = Field(False, description="max_degradation is a fraction of the baseline value.")
    threshold: float | None = Field(None, description="Bound the value must respect (>= for quality).")
    minimize: bool | None = None
    maximize: bool | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in HIGHER_IS_BETTER or v in LOWER_IS_BETTER or (v.startswith("quality.") and len(v) > 8):
            return v
        raise ValueError(f"unknown metric {v!r}; known: {', '.join((*HIGHER_IS_BETTER, *LOWER_IS_BETTER))}, "
                         "quality.<name>")

    @model_validator(mode="after")
    def _one_kind(self) -> Goal:
        kinds = [self.max_degradation is not None, self.threshold is not None, bool(self.minimize),
                 bool(self.maximize)]
        if sum(kinds) != 1:
            raise ValueError("a goal has exactly one of max_degradation, threshold, minimize, maximize")
        return self

    @property
    def is_constraint(self) -> bool:
        return self.max_degradation is not None or self.threshold is not None


class Search(Strict):
    sampler: Literal["grid", "random", "tpe"] = "grid"
    max_trials: int = Field(20, ge=1, le=1000)
    max_time_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    seed: int = 0


class Recipe(Strict):
    name: str = Field("inline", max_length=100)
    description: str = Field("", max_length=2000)
    steps: list[Step] = Field(min_length=1, max_length=32)
    search: Search | None = None
    goals: list[Goal] = Field(default_factory=list, max_length=16)
    target: Target = Field(default_factory=Target)

    @property
    def needs_dataset(self) -> bool:
        return any(s.needs_data for s in self.steps)
