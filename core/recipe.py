"""Recipe v1: the ordered steps, the optional search and goals, and the target the result is measured on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.search import MAX_GRID, Dimension, canonical, check_options, split_space
from core.search import size as space_size
from core.steps import Step

MAX_BATCH = 1024
MAX_DIMS = 8


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(Strict):
    """Where the result will run. Every latency in the report is measured there."""

    device: Literal["cpu", "cuda"] = "cpu"
    runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="onnxruntime, or torch eager (the ONNX graph run by torch; models with "
        "onnxruntime-only operators, such as int8 ones, are measured on onnxruntime and said so).")
    accelerator: Literal["cuda", "tensorrt"] = Field("cuda", description="With device cuda: onnxruntime's CUDA or "
                                                     "TensorRT execution provider.")
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


QUALITY_METRICS = ("accuracy", "macro_f1", "mse", "mae", "cosine")  # and top<k>_accuracy, e.g. top5_accuracy


def check_quality_metric(name: str) -> str:
    if name in QUALITY_METRICS or (name.startswith("top") and name.endswith("_accuracy") and name[3:-9].isdigit()):
        return name
    raise ValueError(f"unknown quality metric {name!r}; known: {', '.join(QUALITY_METRICS)}, top<k>_accuracy")


class Generated(Strict):
    """How float inputs are made when the job has no dataset (they also calibrate static int8 then)."""

    distribution: Literal["normal", "uniform"] = Field(
        "normal", description="normal: standard normal; uniform: in [low, high), e.g. image pixels [0, 1).")
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _range(self):
        if self.distribution == "uniform" and not self.low < self.high:
            raise ValueError("data.generated: low must be below high")
        return self


class Data(Strict):
    """How the job's dataset is split. An array named `split` in the dataset (0 train, 1 eval) overrides
    the random split."""

    eval_fraction: float | None = Field(
        None, ge=0, lt=1, description="Held out for the report's quality and fidelity numbers. Default: 0.2 when "
        "a step trains, else 0 (every sample is evaluated).")
    calibration_samples: int = Field(256, ge=1, le=100_000, description="Training samples steps may calibrate on.")
    seed: int = Field(0, description="Seeds the split, training and generated inputs.")
    generated: Generated = Field(default_factory=Generated, description="Inputs made when there is no dataset.")
    quality: list[str] | None = Field(
        None, description="Quality metrics to report: accuracy, top<k>_accuracy, macro_f1 (integer labels), "
        "mse, mae (regression), cosine (embedding labels). Default: chosen from the labels.")

    @field_validator("quality")
    @classmethod
    def _metrics(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_quality_metric(m) for m in v]


class Search(Strict):
    """Search over the list-valued step parameters (and `optional` steps) for the goals' frontier."""

    sampler: Literal["grid", "random", "tpe"] = Field("grid", description="tpe: Optuna's multi-objective TPE.")
    max_trials: int = Field(20, ge=1, le=1000, description="Candidate recipes tried at most.")
    max_time_s: int = Field(3600, ge=1, le=7 * 24 * 3600, description="No new trial starts after this.")
    seed: int = 0
    stop_when_goals_met: bool = Field(False, description="Stop starting trials once a candidate meets every goal.")
    optional: list[str] = Field(default_factory=list, description="Steps (names or 1-based indexes) that may be "
                                "switched off, e.g. [distill].")
    space: list[Dimension] = Field(default_factory=list, description="What is searched (filled in from the steps' "
                                   "list values).")

    @property
    def size(self) -> int:
        return space_size(self.space)

    @property
    def trials(self) -> int:
        return min(self.max_trials, self.size)


class Recipe(Strict):
    name: str = Field("inline", max_length=100)
    description: str = Field("", max_length=2000)
    steps: list[Step] = Field(min_length=1, max_length=32)
    search: Search | None = None
    goals: list[Goal] = Field(default_factory=list, max_length=16)
    target: Target = Field(default_factory=Target)
    data: Data = Field(default_factory=Data)
    compare_without: list[str] = Field(
        default_factory=list, description="Step names to leave out in a comparison branch, e.g. [distill]: the "
        "report then also shows the same recipe without them (sharing what both have in common).")

    @model_validator(mode="before")
    @classmethod
    def _search_space(cls, data):
        """List-valued step parameters become the search space; the steps keep their first options."""
        if isinstance(data, dict) and isinstance(data.get("search"), dict) and isinstance(data.get("steps"), list):
            search = dict(data["search"])
            steps, dims = split_space(data["steps"], [str(o) for o in search.get("optional", [])])
            if dims and not search.get("space"):
                search["space"] = [d.model_dump() for d in dims]
            data = {**data, "steps": steps, "search": search}
        return data

    @model_validator(mode="after")
    def _bounded(self) -> Recipe:
        if self.search is None:
            return self
        s = self.search
        if not s.space:
            raise ValueError("search: no step parameter is a list of options and no step is optional; "
                             "nothing to search")
        if any(d.step > len(self.steps) for d in s.space):
            raise ValueError("search.space names a step the recipe does not have")
        problems = check_options(self.steps, s.space)
        if problems:
            raise ValueError("search options: " + "; ".join(problems))
        s.space = canonical(self.steps, s.space)  # the size counts distinct points
        if s.sampler == "grid" and (s.size > s.max_trials or s.size > MAX_GRID):
            raise ValueError(f"search: a grid over {s.size} candidates is more than max_trials ({s.max_trials}); "
                             "raise max_trials or use the random or tpe sampler")
        return self

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        for i, step in enumerate(self.steps, 1):
            teacher = getattr(step, "teacher", None)
            if isinstance(teacher, int) and not 1 <= teacher < i:
                raise ValueError(f"step {i} ({step.name}): teacher {teacher} must name an earlier step (1..{i - 1})")
        names = {s.name for s in self.steps}
        unknown = [n for n in self.compare_without if n not in names]
        if unknown:
            raise ValueError(f"compare_without names steps the recipe does not have: {unknown}")
        return self

    @property
    def trains(self) -> bool:
        return any(getattr(s, "trains", False) for s in self.steps)

    @property
    def needs_labels(self) -> list[str]:
        return [s.name for s in self.steps if s.needs_labels]

    @property
    def needs_dataset(self) -> bool:
        return any(s.needs_data for s in self.steps)
