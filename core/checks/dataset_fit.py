"""Checks a dataset against the model and the recipe at submit: every model input has an array of a
compatible dtype and shape, and the labels the recipe's steps need are there."""

from __future__ import annotations

import numpy as np

from core.assets import DatasetRecord, ModelRecord
from core.recipe import Recipe

RESERVED = ("labels", "split")


def _kind(dtype: str) -> str:
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return dtype
    return {"u": "i", "i": "i", "f": "f", "b": "b"}.get(kind, kind)


def dataset_problems(dataset: DatasetRecord, model: ModelRecord, recipe: Recipe) -> list[str]:
    arrays = {a.name: a for a in dataset.arrays}
    problems = []
    for spec in model.inputs:
        array = arrays.get(spec.name)
        if not spec.batched:
            problems += _unbatched_problems(spec, array)
            continue
        if array is None:
            problems.append(f"no array named {spec.name!r} for the model input of that name "
                            f"(the dataset has {sorted(arrays)})")
            continue
        if _kind(array.dtype) != _kind(spec.dtype):
            problems.append(f"{spec.name!r} is {array.dtype}; the model input takes {spec.dtype}")
        if len(array.shape) != len(spec.shape):
            problems.append(f"{spec.name!r} has shape {array.shape}; the model input has {len(spec.shape)} "
                            f"dimensions ({spec.shape}, the first one the samples)")
            continue
        for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), 1):
            if isinstance(want, int) and want > 0 and got != want:
                problems.append(f"{spec.name!r} has {got} in dimension {axis}; the model input needs {want}")
    labels = arrays.get("labels")
    if recipe.needs_labels and labels is None:
        problems.append(f"steps {recipe.needs_labels} learn from labels: the dataset needs an array named 'labels'")
    semi = [st.name for st in recipe.steps if getattr(st, "semi_supervised", False)]
    if semi and (labels is None or _kind(labels.dtype) != "i"):
        problems.append(f"steps {semi} learn from unlabeled data (labeled_fraction, pseudo_labels, consistency): "
                        "that needs a classifier's integer 'labels' (-1 for unlabeled samples)")
    split = arrays.get("split")
    if split is not None and (len(split.shape) != 1 or _kind(split.dtype) != "i"):
        problems.append("'split' must be a 1-D integer array (0 train, 1 eval)")
    return problems


def _unbatched_problems(spec, array) -> list[str]:
    """An input without a batch axis is one tensor fed with every sample: the dataset may give it (whole, in the
    model's shape) or leave it to be generated."""
    if array is None:
        return []
    fits = len(array.shape) == len(spec.shape) and all(
        got == want for got, want in zip(array.shape, spec.shape, strict=True) if isinstance(want, int) and want > 0)
    if fits and _kind(array.dtype) == _kind(spec.dtype):
        return []
    return [f"{spec.name!r} ({array.dtype} {array.shape}) does not fit the model input {spec.name!r} "
            f"({spec.dtype} {spec.shape}), which has no batch axis: give it whole, fed with every sample"]


def held_out_problems(dataset: DatasetRecord, recipe: Recipe) -> list[str]:
    """Whether the dataset leaves samples to evaluate on (and to train on, for a recipe that trains)."""
    if dataset.split is not None:
        return [] if dataset.split.eval else ["the dataset's 'split' array marks no sample for evaluation (1)"]
    fraction = recipe.data.eval_fraction
    n = dataset.samples
    if fraction and round(n * fraction) >= n:
        return [f"data.eval_fraction {fraction} of {n} samples leaves no sample to train on"]
    return []
