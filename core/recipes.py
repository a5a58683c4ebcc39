"""The built-in recipes, served by GET /v1/recipes and usable by name in POST /v1/jobs."""

from __future__ import annotations

from core.errors import InvalidRecipe
from core.recipe import Recipe

_BUILTIN: dict[str, dict] = {
    "int8": {
        "description": (
            "8-bit weights for the matrix multiplications, one scale per output channel, activations "
            "quantized at run time. About 4x smaller on weight-heavy models (MLPs, transformers) and "
            "usually faster on CPU. Convolutions stay in float: onnxruntime's dynamic int8 convolution "
            "is several times slower than float on CPU. Needs no dataset."
        ),
        "steps": [{"quantize": {"mode": "dynamic", "dtype": "int8", "per_channel": True}}],
    },
}


def builtin_recipes() -> list[Recipe]:
    return [Recipe.model_validate({"name": name, **body}) for name, body in _BUILTIN.items()]


def builtin_names() -> list[str]:
    return sorted(_BUILTIN)


def builtin_recipe(name: str) -> Recipe:
    if name not in _BUILTIN:
        known = ", ".join(sorted(_BUILTIN))
        raise InvalidRecipe(f"unknown recipe {name!r}; built-in recipes: {known}", code="unknown_recipe")
    return Recipe.model_validate({"name": name, **_BUILTIN[name]})
