"""What steps pass along: the current model and where to put new files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.assets import TensorSpec
from core.settings import Settings


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
    samples: dict[str, np.ndarray]  # the job's evaluation inputs, keyed by model input name
    labels: np.ndarray | None = None
    from_dataset: bool = False  # samples are the user's data, not generated
    seed: int = 0
    device: str = "cpu"
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    threads: int = 1
    checkpoint: Callable[[str], None] = field(default=lambda message: None)  # progress + cancellation
    notes: list[str] = field(default_factory=list)  # what the step wants the report to say

    def path(self, name: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / name
