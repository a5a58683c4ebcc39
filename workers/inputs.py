"""The inputs a job evaluates and benchmarks on: the uploaded dataset, or samples generated from the
model's input spec (seeded, so the same job sees the same inputs on every attempt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.assets import TensorSpec
from core.errors import InvalidDataset

GENERATED_SAMPLES = 64
DEFAULT_DYNAMIC_DIM = 16  # a named dimension other than the batch, e.g. a sequence length


def sample_shape(spec: TensorSpec, fixed: dict[str, list[int]]) -> list[int]:
    """The shape of one sample (batch dimension dropped), dynamic dimensions made concrete."""
    if spec.name in fixed:
        return list(fixed[spec.name][1:])
    return [d if isinstance(d, int) and d > 0 else DEFAULT_DYNAMIC_DIM for d in spec.shape[1:]]


def generate(specs: list[TensorSpec], fixed: dict[str, list[int]], n: int = GENERATED_SAMPLES,
             seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape = [n, *sample_shape(spec, fixed)]
        dtype = np.dtype(spec.dtype) if spec.dtype != "bool" else np.dtype(bool)
        lowered = spec.name.lower()
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif "mask" in lowered:
            arrays[spec.name] = np.ones(shape, dtype)
        elif "type" in lowered or "segment" in lowered:
            arrays[spec.name] = np.zeros(shape, dtype)
        else:  # token ids and other indices: small values are valid for any vocabulary
            arrays[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
    return arrays


def load_dataset(path: Path, specs: list[TensorSpec]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays named after the model's inputs, and `labels` if present. Never unpickles."""
    with np.load(path, allow_pickle=False) as data:
        missing = [s.name for s in specs if s.name not in data.files]
        if missing:
            raise InvalidDataset(f"the dataset has no array for model inputs {missing}; it has {data.files}")
        arrays = {s.name: data[s.name].astype(np.dtype(s.dtype), copy=False) for s in specs}
        labels = data["labels"] if "labels" in data.files else None
    return arrays, labels


def take(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`rows` samples: the first ones, repeated when there are fewer."""
    out = {}
    for name, a in arrays.items():
        reps = -(-rows // len(a))
        out[name] = np.concatenate([a] * reps)[:rows] if reps > 1 else a[:rows]
    return out


def batch_dim(specs: list[TensorSpec]) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic."""
    for s in specs:
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0:
            return s.shape[0]
    return None
