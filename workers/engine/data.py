"""The data a job works with: the uploaded dataset split into train and eval (deterministic given the
recipe's seed, or by the dataset's own `split` array), or samples generated from the model's input spec
when there is no dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.assets import GENERATED_SAMPLES, TensorSpec
from core.errors import ErrorCode, InvalidDataset
from core.recipe import Generated, Recipe

TRAINING_EVAL_FRACTION = 0.2


@dataclass
class Split:
    """Samples of the model's inputs. `inputs` carry the samples on axis 0; `fixed` are the inputs without a
    batch axis (recurrent states, scalars, fixed-size tensors): the same tensor goes with every batch."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    fixed: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 1

    def take(self, index: np.ndarray) -> Split:
        return Split({k: v[index] for k, v in self.inputs.items()},
                     None if self.labels is None else self.labels[index], self.fixed)

    def feed(self, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
        """What one run of the model takes: these samples of the batched inputs, and the fixed ones."""
        return {**{k: v[rows] for k, v in self.inputs.items()}, **self.fixed}

    def head(self, n: int) -> Split:
        return self.take(np.arange(min(n, len(self))))

    def sample_shapes(self) -> dict[str, list[int]]:
        """Each input's shape in a run of one sample."""
        return {**{k: [1, *v.shape[1:]] for k, v in self.inputs.items()},
                **{k: list(v.shape) for k, v in self.fixed.items()}}


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


STATE = re.compile(r"(^|[_./])(h|c|hn|cn|state|states|hidden|cell|past|cache|memory)([_./\d]|$)", re.I)


def generate(specs: list[TensorSpec], fixed: dict[str, list[int]], n: int = GENERATED_SAMPLES,
             seed: int = 0, how: Generated | None = None) -> Split:
    """Samples made from the input specs: floats normal, integers within the range read from the graph
    (token ids and other indices otherwise small, masks ones, token types zeros), recurrent states zeros
    (the initial state). `how`: the recipe's distribution for float inputs."""
    rng, how = np.random.default_rng(seed), how or Generated()
    split = Split({})
    for spec in specs:
        shape = [n, *spec.sample_shape(fixed)] if spec.batched else spec.sample_shape(fixed)
        dtype = np.dtype(spec.dtype) if spec.dtype != "bool" else np.dtype(bool)
        lowered = spec.name.lower()
        if dtype.kind == "f":
            state = not spec.batched and STATE.search(spec.name)
            if state:
                array = np.zeros(shape, dtype)
            elif how.distribution == "uniform":
                array = rng.uniform(how.low, how.high, shape).astype(dtype)
            else:
                array = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            array = rng.random(shape) < 0.5
        elif "mask" in lowered:
            array = np.ones(shape, dtype)
        elif "type" in lowered or "segment" in lowered:
            array = np.zeros(shape, dtype)
        elif spec.value_range:
            array = rng.integers(*spec.value_range, size=shape).astype(dtype)
        else:  # token ids without a table the graph shows: small values are valid for any vocabulary
            array = rng.integers(0, 100, size=shape).astype(dtype)
        (split.inputs if spec.batched else split.fixed)[spec.name] = array
    return split


def load_dataset(path: Path, specs: list[TensorSpec], fixed: dict[str, list[int]]) -> tuple[Split, np.ndarray | None]:
    """The arrays named after the model's inputs, `labels` if present, and the dataset's own `split`
    (0 train, 1 eval) if present. An input without a batch axis that the dataset does not hold is generated.
    Never unpickles."""
    with np.load(path, allow_pickle=False) as data:
        missing = [s.name for s in specs if s.name not in data.files and s.batched]
        if missing:
            raise InvalidDataset(f"the dataset has no array for model inputs {missing}; it has {data.files}")
        arrays = {s.name: data[s.name].astype(np.dtype(s.dtype), copy=False) for s in specs if s.name in data.files}
        labels = data["labels"] if "labels" in data.files else None
        split = data["split"].astype(np.int64) if "split" in data.files else None
    for name, array in [*arrays.items(), ("labels", labels)]:  # the upload check refuses these too
        if array is not None and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidDataset(f"{name!r} holds NaN or infinite values", code=ErrorCode.non_finite_values)
    unbatched = [s for s in specs if not s.batched]
    whole = Split({s.name: arrays[s.name] for s in specs if s.batched}, labels,
                  {**generate([s for s in unbatched if s.name not in arrays], fixed, 1).fixed,
                   **{s.name: arrays[s.name] for s in unbatched if s.name in arrays}})
    return whole, split


def job_data(dataset: Path | None, specs: list[TensorSpec], recipe: Recipe) -> JobData:
    seed = recipe.data.seed
    if dataset is None:
        generated = generate(specs, recipe.target.input_shapes, seed=seed, how=recipe.data.generated)
        return JobData(generated, generated, from_dataset=False)
    whole, split = load_dataset(dataset, specs, recipe.target.input_shapes)
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


def run_samples(session, samples: Split, n: int, chunk: int = 16) -> list[np.ndarray]:
    """Every output of an onnxruntime session on the first `n` samples, `chunk` at a time (the graph's own
    batch size where it fixes one, the incomplete tail dropped)."""
    fixed = [i.shape[0] for i in session.get_inputs() if i.name in samples.inputs and i.shape and
             isinstance(i.shape[0], int) and i.shape[0] > 0]
    chunk, rows = (fixed[0] if fixed else chunk), min(n, len(samples))
    rows -= rows % chunk if fixed else 0
    pieces = [session.run(None, samples.feed(slice(i, i + chunk))) for i in range(0, rows, chunk)]
    return [np.concatenate([p[k] for p in pieces]) for k in range(len(pieces[0]))]


def batch_dim(specs: list[TensorSpec]) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic."""
    return next((s.fixed_batch for s in specs if s.fixed_batch), None)
