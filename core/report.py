"""Report v1: every number in it was measured on the target."""

from __future__ import annotations

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class Latency(BaseModel):
    p50: float
    p90: float
    p99: float
    spread: float | None = Field(None, description="when timed side by side with the baseline: for the baseline, "
                                 "how far its rounds' medians lay apart, (highest - lowest) / p50; for a candidate, "
                                 "how far its per-round ratios to the baseline did (its p50 is the baseline's over "
                                 "their median)")


class Fidelity(BaseModel):
    """Agreement of a candidate's outputs with the baseline's, on the same inputs."""

    top1_agreement: float | None = None  # classifiers only (datasets with integer labels)
    cosine: float
    max_abs_error: float


class Metrics(BaseModel):
    size_bytes: int
    size_gzip_bytes: int
    params: int
    nonzero_params: int
    macs: int | None = None
    latency_ms: dict[str, Latency] = Field(default_factory=dict, description="batch size -> percentiles")
    throughput_per_s: float | None = None
    peak_memory_bytes: int | None = None
    quality: dict[str, float] = Field(default_factory=dict)
    fidelity: Fidelity | None = None


class VsBaseline(BaseModel):
    size_ratio: float = Field(description="candidate size / baseline size (0.25 = 4x smaller)")
    speedup: float | None = Field(None, description="baseline p50 / candidate p50 at the first batch size")
    speedup_spread: float | None = Field(
        None, description="how noisy the speed-up is: the spread of the candidate's per-round ratios to the "
        "baseline at the first batch size; above 0.15 the candidate's notes say the figure is noisy")
    quality_delta: dict[str, float] = Field(default_factory=dict, description="candidate - baseline")


class GoalResult(BaseModel):
    metric: str
    met: bool
    value: float | None = None
    bound: float | None = None
    gap: float | None = Field(None, description="how far the value is from the bound (0 when met)")


class OpTime(BaseModel):
    op: str = Field(description="operator type as onnxruntime ran it (after its graph fusions)")
    nodes: int
    ms: float = Field(description="mean milliseconds of one run spent in these nodes")


class NodeTime(BaseModel):
    name: str
    op: str
    ms: float


class Profile(BaseModel):
    """Where one run's time went, from onnxruntime's profiler at the target's first batch size."""

    batch: int
    runs: int = Field(description="profiled runs the means are taken over (after a warm-up)")
    total_ms: float = Field(description="sum of the nodes' kernel times (the run's p50 adds the session's overhead)")
    ops: list[OpTime] = Field(default_factory=list, description="per operator type, the costliest first")
    slowest_nodes: list[NodeTime] = Field(default_factory=list)
    providers: dict[str, int] = Field(default_factory=dict, description="nodes per execution provider")
    causes: list[str] = Field(default_factory=list, description="a candidate's: what makes its run differ from "
                              "the baseline's, in words, the costliest first")


class Decision(BaseModel):
    """One option a step weighed (quantize auto's int8 variants), measured, and whether it was taken."""

    step: str
    option: str
    settings: dict = Field(default_factory=dict)
    size_bytes: int | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict, description="batch size -> median ms, timed side "
                                         "by side with the other options")
    fidelity: float | None = None
    chosen: bool = False
    why: str = Field("", description="why it was taken, or why not")


class Candidate(BaseModel):
    id: str
    parent_id: str | None = None
    steps: list[dict] = Field(default_factory=list)
    artifact: str | None = None  # the ONNX file among the job's artifacts
    artifact_pt2: str | None = None  # the .pt2 file, when the input was a PyTorch program
    goals_met: bool = True
    goals: list[GoalResult] = Field(default_factory=list)
    metrics: Metrics
    vs_baseline: VsBaseline | None = None
    regressions: list[str] = Field(default_factory=list, description="where it measured worse than the baseline "
                                   "on the target, e.g. slower at a batch size")
    decisions: list[Decision] = Field(default_factory=list, description="the options its steps weighed")
    profile: Profile | None = Field(None, description="per-operator time (the baseline, the candidates on the "
                                    "frontier and those with regressions, on onnxruntime)")
    notes: list[str] = Field(default_factory=list)


class Measurement(BaseModel):
    """How the latencies were taken, so that they can be reproduced."""

    device: str
    runtime: str = "onnxruntime"
    providers: list[str]  # execution providers (or the torch runtime) the baseline ran on
    threads: int
    warmup: int
    repeats: int
    batch_sizes: list[int]
    inputs: str  # "dataset" or "generated"
    samples: int  # evaluated on
    train_samples: int = 0  # trained on (held apart from the evaluated ones)
    side_by_side_rounds: int = Field(0, description="rounds in which the baseline and the candidates were timed "
                                     "again together, in one process: the p50s come from them")


class Environment(BaseModel):
    cpu: str
    gpu: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class Failure(BaseModel):
    """A candidate that could not be made (searches go on without it)."""

    id: str
    steps: list[dict]
    code: str
    message: str


class SearchSummary(BaseModel):
    sampler: str
    space_size: int
    trials: int  # paths tried
    candidates: int  # nodes measured (shared prefixes counted once)
    failed: int
    skipped: int  # planned but not started (time or goals reached first)
    stopped: str | None = None  # why the search stopped early, if it did


class Normalization(BaseModel):
    """What the import normalization did to the uploaded graph before any step ran (the baseline is measured
    as uploaded)."""

    changed: bool = False
    already_quantized: str | None = Field(None, description="how the uploaded graph is already quantized")
    notes: list[str] = Field(default_factory=list)


class Report(BaseModel):
    """Report v1 (GET /v1/schemas/report publishes this as JSON Schema)."""

    schema_version: int = SCHEMA_VERSION
    job_id: str
    environment: Environment
    measurement: Measurement
    baseline: Candidate
    candidates: list[Candidate]
    frontier: list[str]
    recommended: str
    goals_met: bool
    regressions: list[str] = Field(default_factory=list, description="candidates slower than the baseline")
    failures: list[Failure] = Field(default_factory=list)
    search: SearchSummary | None = None
    normalization: Normalization | None = None
    why_baseline: list[str] = Field(default_factory=list, description="when the baseline is recommended: why each "
                                    "candidate lost to it")


SCHEMA_ID = f"https://pareto.dev/schemas/report/v{SCHEMA_VERSION}.json"


def report_schema() -> dict:
    schema = Report.model_json_schema()
    schema["$id"] = SCHEMA_ID
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["properties"]["schema_version"]["const"] = SCHEMA_VERSION
    return schema
