"""Checks a recipe against the uploaded model before anything is queued, so that a step that cannot
handle the model is refused at submit (422) rather than failing later in a worker."""

from __future__ import annotations

import math

from core.assets import GENERATED_SAMPLES, DatasetRecord, ModelRecord
from core.recipe import Recipe
from core.search import apply


def input_size_problems(recipe: Recipe, model: ModelRecord, dataset: DatasetRecord | None, cap: int) -> list[str]:
    """Inputs too large to make or run: the elements of the largest batch a job feeds (generated samples or
    the dataset's), per input, against PARETO_MAX_INPUT_ELEMENTS."""
    arrays = {a.name: a.shape[1:] for a in dataset.arrays} if dataset else {}
    rows = max(*recipe.target.batch_sizes, 0 if dataset else GENERATED_SAMPLES)
    problems = []
    for spec in model.inputs:
        shape = arrays.get(spec.name) or spec.sample_shape(recipe.target.input_shapes)
        elements = max(rows, spec.fixed_batch or 0) * math.prod(shape) if spec.batched else math.prod(shape)
        if elements > cap:
            problems.append(f"input {spec.name!r}: {rows} samples of shape {shape} are {elements} elements, more "
                            f"than the {cap} this service takes (PARETO_MAX_INPUT_ELEMENTS); fix the dynamic "
                            "dimensions with target.input_shapes or use smaller batch sizes")
    return problems


def input_shape_problems(recipe: Recipe, model: ModelRecord) -> list[str]:
    """target.input_shapes against the model's inputs: a known name, the same rank, and the graph's fixed sizes
    (the batch dimension of a batched input excepted: batch_sizes replace it)."""
    specs = {s.name: s for s in model.inputs}
    problems = []
    for name, shape in recipe.target.input_shapes.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"input_shapes names {name!r}, which is not a model input (inputs: {sorted(specs)})")
            continue
        if len(shape) != len(spec.shape):
            problems.append(f"input_shapes[{name!r}] {shape} has {len(shape)} dimensions; the input has "
                            f"{len(spec.shape)} ({spec.shape})")
            continue
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(want, int) and want > 0 and got != want and not (axis == 0 and spec.batched):
                problems.append(f"input_shapes[{name!r}] has {got} in dimension {axis}; the model fixes it at {want}")
    return problems


def preflight(recipe: Recipe, model: ModelRecord) -> list[str]:
    problems = []
    for i, step in _variants(recipe):
        if model.format not in step.formats:
            problems.append(f"step {i} ({step.name}) takes {' or '.join(step.formats)} models, not {model.format}")
            continue
        problems += [f"step {i} ({problem})" if not problem.startswith(step.name) else f"step {i}: {problem}"
                     for problem in step.preflight(model, recipe.target)]
    return list(dict.fromkeys(problems))


def _variants(recipe: Recipe):
    """Every step, and every searched value of its parameters in its place."""
    for i, step in enumerate(recipe.steps, 1):
        yield i, step
        for d in recipe.search.space if recipe.search else []:
            if d.step == i and d.param is not None:
                for value in d.values[1:]:
                    yield i, apply(recipe.steps, {d: value})[i - 1][1]
