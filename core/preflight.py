"""Checks a recipe against the uploaded model before anything is queued, so that a step that cannot
handle the model is refused at submit (422) rather than failing later in a worker."""

from __future__ import annotations

from core.assets import ModelRecord
from core.recipe import Recipe


def preflight(recipe: Recipe, model: ModelRecord) -> list[str]:
    problems = []
    for i, step in enumerate(recipe.steps, 1):
        if model.format not in step.formats:
            problems.append(f"step {i} ({step.name}) takes {' or '.join(step.formats)} models, not {model.format}")
            continue
        problems += [f"step {i} ({problem})" if not problem.startswith(step.name) else f"step {i}: {problem}"
                     for problem in step.preflight(model, recipe.target)]
    return problems
