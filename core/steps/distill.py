from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.training import Training


class Distill(Training):
    """Knowledge distillation: the current model (student) learns to answer like a teacher."""

    summary = ("Knowledge distillation from the baseline (or an earlier step's model): logits with temperature "
               "for classifiers, output / embedding MSE for encoders and regressors; labels optional.")
    dataset = "yes (labels optional)"
    step: Literal["distill"] = "distill"
    teacher: Literal["baseline"] | int = Field(
        "baseline", description="baseline, or the 1-based index of an earlier step whose result teaches (e.g. the "
        "grown and trained model in grow-improve-and-shrink).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softens logits (classifiers).")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation loss; the rest goes to the label "
                         "loss when the dataset has labels.")
    layers: Literal["off", "hidden", "hidden+attention"] = Field(
        "off", description="Layer-wise distillation for transformers (TinyBERT / MiniLM): each student layer's "
        "hidden state (and attention probabilities) also learns those of the teacher layer it stands for "
        "(uniform mapping: student layer k of S stands for teacher layer k * L / S), where both are transformers "
        "whose layers the graph shows (one Softmax per layer, LayerNormalization). Off by default: on "
        "all-MiniLM-L6-v2 with half its layers dropped and 192 training sentences, output distillation alone "
        "kept more (cosine 0.817 after 8 epochs, 0.748 after 2) than with hidden states and attention matched "
        "too (0.792 at weight 0.1; 0.637 at weight 1 after 2 epochs): it pays with more data and epochs.")
    layer_weight: float = Field(1.0, ge=0, le=100, description="Weight of the layer-wise losses beside the "
                                "output loss.")
    loss: Literal["auto", "kl", "mse", "cosine"] = Field(
        "auto", description="auto: kl for classifiers (integer labels or none and 2-D logits of a classifier "
        "teacher), mse on the outputs otherwise (embeddings, hidden states, regression).")
