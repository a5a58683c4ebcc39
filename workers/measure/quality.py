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
    """The mean over the classes of both arrays of 2tp / (2tp + fp + fn); a class that no sample is (only
    NaN can be one: it equals nothing, itself included) scores 1. Counted by bincount over the classes'
    indices in one pass: a loop over the classes was quadratic when most labels are distinct."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    classes, index = np.unique(np.concatenate([predicted.ravel(), labels.ravel()]), return_inverse=True)
    split = predicted.size
    # paired element by element as comparing the two arrays pairs them (broadcasting included)
    p, t = np.broadcast_arrays(index[:split].reshape(predicted.shape), index[split:].reshape(labels.shape))
    k = len(classes)
    in_predicted, in_labels = np.bincount(p.ravel(), minlength=k), np.bincount(t.ravel(), minlength=k)
    tp = np.bincount(p[p == t], minlength=k)
    nan = classes != classes
    in_predicted[nan] = in_labels[nan] = tp[nan] = 0
    both = in_predicted + in_labels  # 2tp + fp + fn
    return float(np.mean(np.where(both > 0, 2 * tp / np.maximum(both, 1), 1.0)))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each sample's cosine similarity, the one definition every measurement uses: two all-zero samples are
    the same (1), an all-zero sample and another are not (0)."""
    n = min(len(a), len(b))
    a, b = a[:n].reshape(n, -1).astype(np.float64), b[:n].reshape(n, -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-30))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(cosines(a, b)))


def top1_agreement(reference: np.ndarray, output: np.ndarray) -> float | None:
    """How often a classifier's answer is the reference's; None for outputs that are not class scores."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    n = min(len(reference), len(output))
    return float(np.mean(reference[:n].argmax(1) == output[:n].argmax(1)))


def agreement(reference: np.ndarray, output: np.ndarray, classification: bool) -> float:
    """One number for how faithful `output` is: top-1 agreement for a classifier, else the mean cosine."""
    top1 = top1_agreement(reference, output) if classification else None
    return cosine(reference, output) if top1 is None else top1


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
