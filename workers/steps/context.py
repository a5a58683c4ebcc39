"""What steps pass along: the current model and where to put new files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.assets import TensorSpec
from core.report import Decision
from core.settings import Settings
from workers.engine.data import JobData, Split


@dataclass(frozen=True)
class ModelHandle:
    """A model as an ONNX file: the deployable form every step produces."""

    onnx_path: Path


@dataclass
class StepContext:
    """What a step may use besides its parameters and the model."""

    workdir: Path
    settings: Settings
    inputs: list[TensorSpec]
    data: JobData
    seed: int = 0
    device: str = "cpu"
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    threads: int = 1
    batch_sizes: list[int] = field(default_factory=lambda: [1])  # the target's, where steps time variants
    calibration_samples: int = 256
    teachers: dict[str, Path] = field(default_factory=dict)  # "baseline", "1", "2", ...: models that may teach
    goals: list = field(default_factory=list)  # the recipe's goals (quantize's fallback checks the quality ones)
    metrics: list[str] = field(default_factory=list)  # the quality metrics the job reports
    checkpoint: Callable[[str], None] = field(default=lambda message: None)  # progress + cancellation
    notes: list[str] = field(default_factory=list)  # what the step wants the report to say
    decisions: list[Decision] = field(default_factory=list)  # the options it weighed, as data

    @property
    def samples(self) -> Split:
        """The evaluation inputs (what the report measures on)."""
        return self.data.eval

    @property
    def labels(self) -> np.ndarray | None:
        return self.data.eval.labels

    @property
    def train(self) -> Split:
        return self.data.train

    @property
    def from_dataset(self) -> bool:
        return self.data.from_dataset

    @property
    def calibration(self) -> Split:
        """Training inputs to calibrate on."""
        return self.train.head(self.calibration_samples)

    def teacher(self, which: str | int) -> Path:
        return self.teachers[str(which)]

    def path(self, name: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / name
