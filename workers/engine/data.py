"""The data a job works with: the uploaded dataset split into train and eval (deterministic given the
recipe's seed, or by the dataset's own `split` array), or samples generated from the model's input spec
when there is no dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.assets import GENERATED_SAMPLES, TensorSpec
from core.errors import ErrorCode, InvalidDataset
from core.recipe import Recipe

TRAINING_EVAL_FRACTION = 0.2


@dataclass
class Split:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, index: np.ndarray) -> Split:
        return Split({k: v[index] for k, v in self.inputs.items()},
                     None if self.labels is None else self.labels[index])


@dataclass
class JobData:
    train: Split
    eval: Split
    from_dataset: bool

    @property
    def task(self) -> str:
        """classification (integer labels), regression (float labels) or none."""
        labels = self.eval.labels
        if labels is None:
            return "none"
        return "classification" if np.issubdtype(labels.dtype, np.integer) else "regression"


def generate(specs: list[TensorSpec], fixed: dict[str, list[int]], n: int = GENERATED_SAMPLES,
             seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape = [n, *spec.sample_shape(fixed)]
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


def load_dataset(path: Path, specs: list[TensorSpec]) -> tuple[Split, np.ndarray | None]:
    """The arrays named after the model's inputs, `labels` if present, and the dataset's own `split`
    (0 train, 1 eval) if present. Never unpickles."""
    with np.load(path, allow_pickle=False) as data:
        missing = [s.name for s in specs if s.name not in data.files]
        if missing:
            raise InvalidDataset(f"the dataset has no array for model inputs {missing}; it has {data.files}")
        arrays = {s.name: data[s.name].astype(np.dtype(s.dtype), copy=False) for s in specs}
        labels = data["labels"] if "labels" in data.files else None
        split = data["split"].astype(np.int64) if "split" in data.files else None
    for name, array in [*arrays.items(), ("labels", labels)]:  # the upload check refuses these too
        if array is not None and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidDataset(f"{name!r} holds NaN or infinite values", code=ErrorCode.non_finite_values)
    return Split(arrays, labels), split


def job_data(dataset: Path | None, specs: list[TensorSpec], recipe: Recipe) -> JobData:
    seed = recipe.data.seed
    if dataset is None:
        generated = Split(generate(specs, recipe.target.input_shapes, seed=seed))
        return JobData(generated, generated, from_dataset=False)
    whole, split = load_dataset(dataset, specs)
    if split is not None:
        train, held = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
        if not len(held):
            raise InvalidDataset("the dataset's `split` array marks no sample for evaluation (1)")
        return JobData(whole.take(train if len(train) else held), whole.take(held), from_dataset=True)
    fraction = recipe.data.eval_fraction
    if fraction is None:
        fraction = TRAINING_EVAL_FRACTION if recipe.trains else 0.0
    order = np.random.default_rng(seed).permutation(len(whole))
    n_eval = int(round(len(whole) * fraction))
    if fraction == 0 or n_eval == 0:
        return JobData(whole.take(order), whole, from_dataset=True)
    if n_eval >= len(whole):
        raise InvalidDataset(f"data.eval_fraction {fraction} leaves no sample to train on")
    return JobData(whole.take(order[n_eval:]), whole.take(np.sort(order[:n_eval])), from_dataset=True)


def batch_dim(specs: list[TensorSpec]) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic."""
    for s in specs:
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0:
            return s.shape[0]
    return None
