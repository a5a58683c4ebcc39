"""Checks a recipe against the uploaded model before anything is queued, so that a step that cannot
handle the model is refused at submit (422) rather than failing later in a worker."""

from __future__ import annotations

from core.assets import ModelRecord
from core.recipe import Recipe
from core.search import apply


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
