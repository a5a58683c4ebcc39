"""Layer-wise distillation for transformers (the TinyBERT and MiniLM objectives): besides the outputs, each
student layer's hidden state and attention probabilities learn those of the teacher layer it stands for.

Where the layers are is read from the graph alone. Each attention layer has one Softmax; the hidden state
leaving layer k is the last LayerNormalization before layer k + 1's Softmax (after the last layer: the last
LayerNormalization of the graph), and the one before the first Softmax is the embeddings' output. That holds
for post-norm encoders (BERT: the block's second LayerNorm) and pre-norm ones (GPT-2, ViT: the next block's
normalized input, then the final LayerNorm). Student layer k stands for teacher layer round(k * L / S) (the
uniform mapping), for a student of S layers made from a teacher of L by dropping layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch
import torch.nn.functional as F

EPS = 1e-8


@dataclass
class Layers:
    hidden: list[str]  # hidden state after the embeddings (0) and after each layer (1..L)
    attention: list[str]  # each layer's attention probabilities (Softmax outputs)


def transformer_layers(model: onnx.ModelProto) -> Layers | None:
    """Where the graph's layers are, or None when it is not a transformer this can read."""
    nodes = list(model.graph.node)
    softmax = [i for i, n in enumerate(nodes) if n.op_type == "Softmax"]
    norms = [i for i, n in enumerate(nodes) if n.op_type == "LayerNormalization"]
    if not softmax or not norms or norms[0] > softmax[0]:
        return None
    hidden = []
    for bound in [*softmax, len(nodes)]:
        before = [i for i in norms if i < bound]
        hidden.append(nodes[before[-1]].output[0])
    if len(set(hidden)) != len(hidden):  # a layer without a LayerNormalization of its own
        return None
    return Layers(hidden, [nodes[i].output[0] for i in softmax])


@dataclass
class LayerMatch:
    """Pairs of (student tensor, teacher tensor) and the weight of their losses beside the output loss."""

    hidden: list[tuple[str, str]]
    attention: list[tuple[str, str]]
    weight: float

    def taps(self) -> tuple[set[str], set[str]]:
        pairs = self.hidden + self.attention
        return {s for s, _ in pairs}, {t for _, t in pairs}

    def loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states: mean squared error relative to the teacher's mean square (so that layers of any scale
        weigh alike); attention: KL divergence of the student's probabilities from the teacher's."""
        terms = []
        for s, t in self.hidden:
            a, b = student[s], teacher[t]
            if a.shape == b.shape:
                terms.append(F.mse_loss(a, b) / (b.pow(2).mean() + EPS))
        for s, t in self.attention:
            a, b = student[s], teacher[t]
            if a.shape == b.shape:
                kl = b * (torch.log(b + EPS) - torch.log(a + EPS))
                terms.append(kl.sum(-1).mean())
        if not terms:
            return torch.zeros(())
        return self.weight * torch.stack(terms).mean()


def match(student: onnx.ModelProto, teacher: onnx.ModelProto, attention: bool, weight: float) -> LayerMatch | str:
    """The layer pairs, or why there are none."""
    mine, theirs = transformer_layers(student), transformer_layers(teacher)
    if mine is None or theirs is None:
        return "the student or the teacher is not a transformer whose layers can be read (Softmax, LayerNorm)"
    s, t = len(mine.attention), len(theirs.attention)
    if s > t:
        return f"the student has more layers ({s}) than the teacher ({t})"
    mapped = [round(k * t / s) for k in range(s + 1)]  # student layer k -> teacher layer
    hidden = [(mine.hidden[k], theirs.hidden[m]) for k, m in enumerate(mapped)]
    attn = [(mine.attention[k - 1], theirs.attention[m - 1]) for k, m in enumerate(mapped) if k] if attention else []
    return LayerMatch(hidden, attn, weight)
