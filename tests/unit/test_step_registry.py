"""Every step a recipe may name has an implementation on the workers, and every implementation a step."""

from __future__ import annotations

from core.steps import StepParams
from workers.steps import IMPLEMENTATIONS


def test_every_registered_step_has_an_implementation_and_back():
    registered = set(StepParams.registry.values())
    implemented = set(IMPLEMENTATIONS)
    assert registered - implemented == set(), "steps without an implementation"
    assert implemented - registered == set(), "implementations of no registered step"
    assert all(callable(fn) for fn in IMPLEMENTATIONS.values())
