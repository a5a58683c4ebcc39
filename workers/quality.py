"""Quality metrics of a model's first output against the labels of the evaluation split."""

from __future__ import annotations

import numpy as np


def default_metrics(task: str, labels: np.ndarray | None) -> list[str]:
    if task == "classification":
        return ["accuracy", "macro_f1"]
    if task == "regression":
        return ["mse", "mae", *(["cosine"] if labels is not None and labels.ndim >= 2 else [])]
    return []


def top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    best = np.argpartition(-logits, min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float(np.mean((best == labels[:, None]).any(1)))


def macro_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    scores = []
    for c in np.union1d(predicted, labels):
        tp = np.sum((predicted == c) & (labels == c))
        fp, fn = np.sum((predicted == c) & (labels != c)), np.sum((predicted != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(scores))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return float(np.mean((a * b).sum(1) / norms))


def quality(output: np.ndarray, labels: np.ndarray | None, metrics: list[str]) -> dict[str, float]:
    if labels is None or not metrics:
        return {}
    n = min(len(output), len(labels))
    output, labels = output[:n], labels[:n]
    result = {}
    for name in metrics:
        if name in ("accuracy", "macro_f1") or name.startswith("top"):
            if output.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
                continue  # not a classifier's output for these labels
            if name == "accuracy":
                result[name] = float(np.mean(output.argmax(1) == labels))
            elif name == "macro_f1":
                result[name] = macro_f1(output.argmax(1), labels)
            else:
                result[name] = top_k(output, labels, int(name[3:-9]))
        elif output.size == labels.size:  # regression / embedding targets
            diff = output.reshape(labels.shape).astype(np.float64) - labels
            if name == "mse":
                result[name] = float(np.mean(diff**2))
            elif name == "mae":
                result[name] = float(np.mean(np.abs(diff)))
            elif name == "cosine":
                result[name] = cosine(output, labels)
    return result
