"""The built-in recipes, served by GET /v1/recipes and usable by name in POST /v1/jobs."""

from __future__ import annotations

from core.errors import ErrorCode, InvalidRecipe
from core.recipe import Recipe

_BUILTIN: dict[str, dict] = {
    "int8": {
        "description": (
            "8-bit integers, chosen by measurement: dynamic quantization (int8 weights, activations quantized "
            "at run time) and, when the job has a dataset or the model is mostly convolutions, static quantization "
            "calibrated on the dataset or on generated inputs (data.generated; the report says so) (QDQ, and "
            "QOperator where the target is the CPU), each with one scale per output channel and one per tensor "
            "(dynamic also per channel only in the MatMul layers whose channels' ranges spread widely), are "
            "built; those that keep 99 % fidelity to the input model (top-1 agreement for classifiers, cosine "
            "otherwise) run on the target, and the fastest wins, the smaller file among equally fast ones. "
            "About 4x smaller. Use it for any model you want "
            "smaller and usually faster on CPU; give a dataset for convolutional networks (their fast int8 path "
            "is static, and calibrates best on real inputs)."
        ),
        "steps": [{"quantize": {"mode": "auto", "dtype": "int8"}}],
    },
    "int4-weight-only": {
        "description": (
            "4-bit weights in blocks of 32 (onnxruntime MatMulNBits) for the matrix multiplications, and the "
            "embedding tables in 4-bit blocks too (GatherBlockQuantized); activations stay in float. About 6-7x "
            "smaller on those weights. Use it when memory or "
            "download size matters most (large language or embedding models); measure the fidelity, it "
            "costs more than int8. Needs no dataset."
        ),
        "steps": [{"quantize": {"mode": "weight_only", "dtype": "int4", "block_size": 32}}],
    },
    "shrink-and-improve": {
        "description": (
            "Footprint first (the survey's shrink-and-improve): 70 % of every prunable layer's channels (the kept "
            "counts rounded to multiples of 8, the widths CPU kernels run fastest) and attention heads are "
            "removed, the smaller model is distilled from the original on your dataset (labels used when "
            "present), then quantized to int8 as in `int8`, unless int8 measures slower on the target than the "
            "distilled float model (small models can: quantizing and reordering activations then costs more "
            "than the integer kernels save), in which case the float model is kept. The report also shows the "
            "same shrink without distillation, so you see what the recovery bought. Use it when size and latency "
            "matter most and you can spare a little quality. Needs a dataset."
        ),
        "steps": [
            {"prune": {"method": "structured", "ratio": 0.7, "round_to": 8}},
            {"distill": {"teacher": "baseline", "epochs": 10, "lr": 0.002}},
            {"quantize": {"mode": "auto", "dtype": "int8", "keep_float_if_faster": True}},
        ],
        "compare_without": ["distill"],
    },
    "grow-improve-and-shrink": {
        "description": (
            "Quality first (the survey's grow-improve-and-shrink): every growable layer is widened 1.5x without "
            "changing what the model computes, the bigger model is fine-tuned on your labels, pruned back to "
            "the original widths, distilled from the grown model, then quantized to int8. Ends at the original "
            "size or below with the grown model's quality carried over. Use it when quality must not drop "
            "(and may rise) and you have labelled data. Needs a dataset with labels."
        ),
        "steps": [
            {"grow": {"width_multiplier": 1.5}},
            {"finetune": {"epochs": 10, "lr": 0.0005, "augment": {"crop_padding": 1}}},
            {"prune": {"method": "structured", "ratio": 0.3333}},
            {"distill": {"teacher": 2, "epochs": 15, "lr": 0.001}},
            {"quantize": {"mode": "auto", "dtype": "int8"}},
        ],
    },
    "efficient-layers-and-distill": {
        "description": (
            "Efficient layers in place of standard ones (the survey's layer-swap family): k x k convolutions "
            "become depthwise-separable and Linear layers low-rank pairs at half rank, each fitted to the "
            "original by least squares and only where parameters and MACs drop; then the model is distilled "
            "from the original to recover what the swap lost (the report shows both). Use it for CNNs and MLPs "
            "whose compute you want down without quantization. Needs a dataset (labels optional)."
        ),
        "steps": [
            {"swap_layers": {"conv": "depthwise_separable", "linear": "low_rank", "rank_ratio": 0.5}},
            {"distill": {"teacher": "baseline", "epochs": 15, "lr": 0.002}},
        ],
    },
    "prune-and-distill": {
        "description": (
            "A float model with 30 % fewer channels and heads in every prunable layer, distilled from the "
            "original to recover its quality. Use it when you need a smaller, faster model that stays in float "
            "(a runtime without int8 kernels, or to quantize later yourself). Needs a dataset (labels optional)."
        ),
        "steps": [
            {"prune": {"method": "structured", "ratio": 0.3}},
            {"distill": {"teacher": "baseline", "epochs": 10, "lr": 0.001}},
        ],
    },
}


def builtin_recipes() -> list[Recipe]:
    return [Recipe.model_validate({"name": name, **body}) for name, body in _BUILTIN.items()]


def builtin_names() -> list[str]:
    return sorted(_BUILTIN)


def builtin_recipe(name: str) -> Recipe:
    if name not in _BUILTIN:
        known = ", ".join(sorted(_BUILTIN))
        raise InvalidRecipe(f"unknown recipe {name!r}; built-in recipes: {known}", code=ErrorCode.unknown_recipe)
    return Recipe.model_validate({"name": name, **_BUILTIN[name]})
