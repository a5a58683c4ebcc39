"""The search space of a recipe with a `search` block.

A list where a step parameter takes one value means "search over these" (for a parameter that is itself
a list, a list of lists); `search.optional` names steps that may be switched off. Each option is
validated on its own, so a bad value is refused with its location before anything is queued, and the
space is counted so that a search the limits cannot cover is refused too.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.steps import StepParams

MAX_GRID = 10_000  # a grid larger than this is refused whatever max_trials says
SAMPLE_ATTEMPTS = 20  # random draws per point wanted, at most


class Dimension(BaseModel):
    """One searched choice: a step parameter's options, or a step switched on / off (param None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(ge=1)  # 1-based index in the recipe's steps
    param: str | None  # None: the step is on or off
    values: tuple = Field(min_length=1)

    @field_validator("values", mode="before")
    @classmethod
    def _distinct(cls, v):
        """Hashable, and each value once: a value listed twice is one point of the space, not two."""
        if not isinstance(v, list | tuple):
            raise ValueError("values must be a list")
        return tuple(dict.fromkeys(_freeze(x) for x in v))

    @property
    def label(self) -> str:
        return f"steps.{self.step - 1}.{self.param or 'enabled'}"


def _takes_list(cls: type[StepParams], param: str) -> bool:
    field = cls.model_fields.get(param)
    if field is None:
        return False
    annotation = field.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, type(None)) else ()
    return any(typing.get_origin(a) is list for a in (annotation, *options)) or typing.get_origin(annotation) is list


def _is_search(cls: type[StepParams], param: str, value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    return all(isinstance(v, list) for v in value) if _takes_list(cls, param) else True


def split_space(raw_steps: list, optional: list[str]) -> tuple[list, list[Dimension]]:
    """(the steps with every searched parameter at its first option, the dimensions searched)."""
    concrete, dims = [], []
    for i, item in enumerate(raw_steps, 1):
        if not isinstance(item, dict) or len(item) != 1:
            concrete.append(item)  # the recipe's own validation explains the problem
            continue
        ((name, params),) = item.items()
        cls = StepParams.registry.get(name)
        if cls is None or not isinstance(params, dict):
            concrete.append(item)
            continue
        first = dict(params)
        for param, value in params.items():
            if _is_search(cls, param, value):
                dims.append(Dimension(step=i, param=param, values=value))
                first[param] = value[0]
        concrete.append({name: first})
        if name in optional or str(i) in optional:
            dims.append(Dimension(step=i, param=None, values=(True, False)))
    return concrete, dims


def _freeze(v):
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


def _thaw(v):
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


def check_options(steps: list[StepParams], dims: list[Dimension]) -> list[str]:
    """Each searched value validated in place of the first one; the problems found."""
    problems = []
    for d in dims:
        if d.param is None:
            continue
        base = steps[d.step - 1]
        for value in d.values:
            try:
                type(base).model_validate({**base.params(), d.param: _thaw(value), "step": base.name})
            except ValidationError as e:
                problems += [f"{d.label} = {_thaw(value)!r}: {err['msg']}" for err in e.errors()]
    return problems


def canonical(steps: list[StepParams], dims: list[Dimension]) -> list[Dimension]:
    """Each searched value as its step reads it (0.5 and "0.5" for a float are one option), each once. Call
    after check_options."""
    out = []
    for d in dims:
        if d.param is None:
            out.append(d)
            continue
        base = steps[d.step - 1]
        values = [type(base).model_validate({**base.params(), d.param: _thaw(v), "step": base.name}).params()[d.param]
                  for v in d.values]
        out.append(Dimension(step=d.step, param=d.param, values=values))
    return out


def size(dims: list[Dimension]) -> int:
    return math.prod(len(d.values) for d in dims)


Choice = dict[Dimension, Any]


def grid(dims: list[Dimension]) -> list[Choice]:
    return [dict(zip(dims, combo, strict=True)) for combo in itertools.product(*(d.values for d in dims))]


def sample(dims: list[Dimension], n: int, seed: int) -> list[Choice]:
    """n distinct random points (all of them when the space is smaller)."""
    everything = grid(dims) if size(dims) <= MAX_GRID else None
    rng = random.Random(seed)
    if everything is not None:
        rng.shuffle(everything)
        return everything[:n]
    seen, picked = set(), []
    for _ in range(SAMPLE_ATTEMPTS * n):  # bounded: more than MAX_GRID distinct points exist, so this ends early
        combo = tuple(rng.choice(d.values) for d in dims)
        if combo not in seen:
            seen.add(combo)
            picked.append(dict(zip(dims, combo, strict=True)))
            if len(picked) == n:
                break
    return picked


def apply(steps: list[StepParams], choice: Choice) -> list[tuple[int, StepParams]]:
    """The concrete path a choice describes: (1-based recipe index, step) for every step switched on."""
    path = []
    for i, step in enumerate(steps, 1):
        if choice.get(next((d for d in choice if d.step == i and d.param is None), None), True) is False:
            continue
        changes = {d.param: _thaw(v) for d, v in choice.items() if d.step == i and d.param is not None}
        path.append((i, type(step).model_validate({**step.params(), **changes, "step": step.name})
                     if changes else step))
    return path


def recipe_paths(recipe) -> list[list[tuple[int, StepParams]]]:
    """The recipe's steps, and the comparison branch without `compare_without` (a step whose teacher was
    left out goes too)."""
    main = list(enumerate(recipe.steps, 1))
    result = [main]
    if recipe.compare_without:
        dropped = {i for i, s in main if s.name in recipe.compare_without}
        alt = [(i, s) for i, s in main if i not in dropped and getattr(s, "teacher", None) not in dropped]
        if alt and alt != main:
            result.append(alt)
    return result


def planned_paths(recipe) -> list[list[tuple[int, StepParams]]] | None:
    """Every path a job will try, when it is known before it runs (None for tpe, which adapts)."""
    s = recipe.search
    if s is None:
        return recipe_paths(recipe)
    if s.sampler == "grid":
        return [apply(recipe.steps, c) for c in grid(s.space)]
    if s.sampler == "random":
        return [apply(recipe.steps, c) for c in sample(s.space, s.trials, s.seed)]
    return None


def estimate(recipe, size_bytes: int, samples: int) -> dict:
    """What a job will do, and a rough idea of how long it takes (not a measurement)."""
    paths = planned_paths(recipe)
    if paths is None:  # tpe: the budget's upper bound
        trials, nodes = recipe.search.trials, recipe.search.trials * len(recipe.steps)
        epochs = recipe.search.trials * sum(getattr(s, "epochs", 0) for s in recipe.steps if s.trains)
    else:
        seen, epochs = set(), 0
        for p in paths:  # a prefix several paths share is made once
            for i, (_, step) in enumerate(p, 1):
                if json_key(p[:i]) not in seen:
                    seen.add(json_key(p[:i]))
                    epochs += getattr(step, "epochs", 0) if step.trains else 0
        trials, nodes = len(paths), len(seen)
    mb = size_bytes / 1e6
    t = recipe.target
    per_measurement = 1.5 + mb * 0.02 * len(t.batch_sizes) * t.repeats / 50
    seconds = (nodes + 1) * per_measurement + epochs * max(samples, 1) * mb / 2000
    return {"trials": trials, "candidates": nodes, "measurements": nodes + 1, "training_epochs": epochs,
            "estimate_s": round(seconds, 1),
            "estimate_note": "rough: from the model size, the measurement settings and the epochs; the report "
                             "has the real times"}


def json_key(path) -> str:
    """A path's identity: its steps with their parameters."""
    return json.dumps([st.as_recipe_item() for _, st in path], sort_keys=True)
