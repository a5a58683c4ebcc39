"""Quality metrics: macro F1 counted in one pass gives what the loop over the classes gave."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workers.measure.quality import macro_f1


def loop_macro_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The implementation macro_f1 replaced (quadratic), the reference for its values."""
    scores = []
    for c in np.union1d(predicted, labels):
        tp = np.sum((predicted == c) & (labels == c))
        fp, fn = np.sum((predicted == c) & (labels != c)), np.sum((predicted != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(scores))


def same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def random_pairs(rng: np.random.Generator):
    for _ in range(300):
        n, classes = int(rng.integers(1, 400)), int(rng.integers(1, 50))
        predicted, labels = rng.integers(0, classes, n), rng.integers(0, classes, n)
        yield predicted, labels
        yield predicted, rng.integers(-classes, 2 * classes, n).astype(np.int32)  # classes on one side only
        noisy = labels.astype(np.float64)
        noisy[rng.random(n) < 0.1] = np.nan  # NaN equals nothing: its class scores 1.0
        yield predicted.astype(np.float64), noisy
    yield rng.permutation(5000), rng.permutation(5000)  # all distinct


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_equals_the_loop_over_the_classes(seed):
    for predicted, labels in random_pairs(np.random.default_rng(seed)):
        assert same(macro_f1(predicted, labels), loop_macro_f1(predicted, labels)), (predicted, labels)


@pytest.mark.parametrize(("predicted", "labels"), [
    ([0, 1, 2], [0, 1, 2]), ([0, 0, 0], [1, 1, 1]), ([3], [3]),
    (np.array([1.0, np.nan]), np.array([np.nan, 1.0])), (np.array([np.nan]), np.array([np.nan])),
    (np.array([0, 1, 2]), np.array([[0], [1]])),  # broadcast, as == broadcasts
    (np.array([5]), np.array([], dtype=np.int64)),  # no pairs: every class scores 1.0
    (np.array([2**60 + 1]), np.array([2**60 + 1], dtype=np.uint64)),  # compared as float64, as before
    (np.array([-0.0, 0.0]), np.array([0.0, -0.0])),
])
def test_macro_f1_edge_cases_equal_the_loop(predicted, labels):
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    assert same(macro_f1(predicted, labels), loop_macro_f1(predicted, labels))


def test_macro_f1_is_linear_in_distinct_labels():
    """120 k samples, all labels distinct: the loop took 104 s."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(120_000)
    predicted = np.where(rng.random(120_000) < 0.5, labels, rng.permutation(120_000))
    started = time.perf_counter()
    score = macro_f1(predicted, labels)
    assert time.perf_counter() - started < 0.5
    assert 0.4 < score < 0.8


def test_every_measurement_uses_one_cosine_with_one_rule_for_zero_outputs():
    from workers.measure.bench import fidelity
    from workers.measure.quality import agreement, cosine

    zero, one = np.zeros((2, 3)), np.ones((2, 3))
    assert cosine(zero, zero) == agreement(zero, zero, False) == fidelity(zero, zero, False).cosine == 1.0
    assert cosine(zero, one) == agreement(zero, one, False) == fidelity(zero, one, False).cosine == 0.0
