"""The built-in recipes, served by GET /v1/recipes and usable by name in POST /v1/jobs."""

from __future__ import annotations

from core.errors import InvalidRecipe
from core.recipe import Recipe

_BUILTIN: dict[str, dict] = {
    "int8": {
        "description": (
            "8-bit integers, chosen by measurement: dynamic quantization (int8 weights, activations quantized "
            "at run time, one scale per output channel) and, when the job has a dataset, static QDQ "
            "quantization calibrated on it are both built and run on the target; the fastest one that keeps "
            "99 % fidelity to the input model (top-1 agreement for classifiers, cosine otherwise) wins. About "
            "4x smaller. Use it for any model you want smaller and usually faster on CPU; give a dataset for "
            "convolutional networks (their fast int8 path is static)."
        ),
        "steps": [{"quantize": {"mode": "auto", "dtype": "int8"}}],
    },
    "int4-weight-only": {
        "description": (
            "4-bit weights in blocks of 32 (onnxruntime MatMulNBits) for the matrix multiplications; "
            "activations stay in float. About 6-7x smaller on the MatMul weights. Use it when memory or "
            "download size matters most (large language or embedding models); measure the fidelity, it "
            "costs more than int8. Needs no dataset."
        ),
        "steps": [{"quantize": {"mode": "weight_only", "dtype": "int4", "block_size": 32}}],
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
