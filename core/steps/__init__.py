"""Step parameters, one module per technique, and the tagged union a recipe's step list is made of."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, PlainSerializer, Tag

from core.steps.base import StepParams, register_package

register_package(__name__, __path__)  # every module of this package defines one step


def _tagged(item: Any) -> Any:
    """`{"quantize": {...}}` (the recipe's form) -> `{"step": "quantize", ...}` (the union's tag)."""
    if isinstance(item, StepParams):
        return item
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError('each step is a mapping with exactly one key, the step name: {"quantize": {...}}')
    ((name, params),) = item.items()
    if name not in StepParams.registry:
        known = ", ".join(sorted(StepParams.registry))
        raise ValueError(f"unknown step {name!r}; known steps: {known}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"the parameters of step {name!r} must be a mapping")
    return {**params, "step": name}


def _tag_of(item: Any) -> str | None:
    return item.step if isinstance(item, StepParams) else item.get("step") if isinstance(item, dict) else None


_members = tuple(Annotated[cls, Tag(name)] for name, cls in StepParams.registry.items())

Step = Annotated[
    Union[_members],  # noqa: UP007  (a tuple of types, built from the registry)
    Discriminator(_tag_of),
    BeforeValidator(_tagged),
    PlainSerializer(lambda s: s.as_recipe_item(), return_type=dict),
]


def catalog() -> list[dict[str, Any]]:
    """Every step with its JSON schema, for GET /v1/steps."""
    return [cls.describe() for _, cls in sorted(StepParams.registry.items())]


__all__ = ["Step", "StepParams", "catalog"]
