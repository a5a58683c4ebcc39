from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.recipe import Goal, Recipe
from core.recipes import builtin_recipe, builtin_recipes
from core.steps import StepParams, catalog
from core.steps.quantize import Quantize


def test_steps_are_a_tagged_union_and_round_trip():
    r = Recipe.model_validate({"steps": [{"quantize": {"mode": "dynamic", "exclude": ["*head*"]}}]})
    assert isinstance(r.steps[0], Quantize) and r.steps[0].exclude == ["*head*"]
    dumped = r.model_dump(mode="json")
    assert list(dumped["steps"][0]) == ["quantize"]
    assert Recipe.model_validate(dumped) == r


@pytest.mark.parametrize("step", [
    *({name: {}} for name in sorted(StepParams.registry) if name != "grow"),  # grow has no default growth
    {"grow": {"width_multiplier": 2}},
    {"drop_layers": {"drop": [0, 2]}},
    {"drop_layers": {"keep_every": 3}},
    {"quantize": {"mode": "static", "method": "entropy", "exclude": ["*head*"]}},
])
def test_a_stored_step_reads_back_as_it_was(step):
    """Job records store the dumped recipe, defaults included: it must validate again, unchanged."""
    r = Recipe.model_validate({"steps": [step]})
    assert Recipe.model_validate(r.model_dump(mode="json")) == r


def test_drop_layers_takes_one_rule():
    with pytest.raises(ValidationError, match="not both"):
        Recipe.model_validate({"steps": [{"drop_layers": {"keep_every": 2, "drop": [1]}}]})
    assert Recipe.model_validate({"steps": [{"drop_layers": {}}]}).steps[0].keep_every == 2


def test_a_step_without_parameters_takes_the_defaults():
    r = Recipe.model_validate({"steps": [{"quantize": None}]})
    assert r.steps[0] == Quantize()


@pytest.mark.parametrize("steps, message", [
    ([{"nope": {}}], "unknown step 'nope'"),
    ([{"quantize": {}, "prune": {}}], "exactly one key"),
    (["quantize"], "exactly one key"),
    ([{"quantize": {"dtype": "int3"}}], "dtype"),
    ([{"quantize": {"extra": True}}], "extra"),
    ([{"quantize": [1, 2]}], "must be a mapping"),
])
def test_bad_steps_are_rejected(steps, message):
    with pytest.raises(ValidationError) as e:
        Recipe.model_validate({"steps": steps})
    assert message in str(e.value)


def test_unknown_top_level_fields_are_rejected():
    with pytest.raises(ValidationError):
        Recipe.model_validate({"steps": [{"quantize": {}}], "stepz": []})


def test_target_batch_sizes_are_sorted_and_bounded():
    r = Recipe.model_validate({"steps": [{"quantize": {}}], "target": {"batch_sizes": [8, 1, 8]}})
    assert r.target.batch_sizes == [1, 8]
    with pytest.raises(ValidationError):
        Recipe.model_validate({"steps": [{"quantize": {}}], "target": {"batch_sizes": [5000]}})


def test_a_goal_has_exactly_one_kind():
    assert Goal(metric="quality", max_degradation=0.01).is_constraint
    assert not Goal(metric="latency_p50_ms", minimize=True).is_constraint
    for bad in [{"metric": "quality"}, {"metric": "quality", "threshold": 0.9, "minimize": True}]:
        with pytest.raises(ValidationError):
            Goal.model_validate(bad)


def test_builtin_recipes_validate_and_describe_themselves():
    for r in builtin_recipes():
        assert r.description and builtin_recipe(r.name) == r


def test_catalog_lists_every_registered_step_with_its_schema():
    names = [s["name"] for s in catalog()]
    assert names == sorted(StepParams.registry)
    quantize = next(s for s in catalog() if s["name"] == "quantize")
    assert quantize["schema"]["properties"]["per_channel"]["default"] is True


def test_quantize_precision_follows_the_mode_unless_given():
    assert [Quantize(mode=m).precision for m in ("dynamic", "static", "weight_only", "float")] == \
        ["int8", "int8", "int4", "fp16"]
    assert Quantize(mode="float", dtype="bf16").precision == "bf16"
    with pytest.raises(ValidationError, match="takes dtype"):
        Quantize(mode="float", dtype="int8")


def test_a_search_over_quantize_modes_needs_no_dtype():
    from core.search import apply, check_options, grid, split_space

    steps, dims = split_space([{"quantize": {"mode": ["dynamic", "static", "float", "weight_only"]}}], [])
    recipe = Recipe.model_validate({"steps": steps})
    assert check_options(recipe.steps, dims) == []
    paths = [apply(recipe.steps, choice) for choice in grid(dims)]
    assert [path[0][1].precision for path in paths] == ["int8", "int8", "fp16", "int4"]
