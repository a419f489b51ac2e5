"""Which features a recipe needs (`FeaturePlan`): what the search reads, `cache build` fills, curve and bench use."""

from __future__ import annotations

import pytest

from automl.errors import RecipeError
from automl.recipe import parse_recipe
from automl.search.features import FeaturePlan


def _search(search: str):
    return parse_recipe(f"data: {{folder: unused}}\nsearch: {search}\n").search


def test_the_search_plan_is_the_offered_cuts_plus_pooled_vectors_of_train_and_val() -> None:
    search = _search("{backbones: [lite_a, lite_b], cuts: [top, half]}")
    plan = FeaturePlan.for_search(search, {"lite_a": ["all", "top", "none"], "lite_b": ["all", "top", "half"]})
    # `all` for every backbone: the selection fits LR-CV on each one's pooled vectors
    assert plan.cuts == {"lite_a": ("all", "top"), "lite_b": ("all", "top", "half")}
    assert plan.splits == ("train", "val"), "no trial reads the test split"
    assert FeaturePlan.pooled("lite_b", ("train", "test")).cuts == {"lite_b": ("all",)}


def test_a_backbone_offering_none_of_the_cuts_is_refused_naming_both_lists() -> None:
    with pytest.raises(RecipeError, match=r"search\.cuts: backbone lite_a offers none of \['half'\]"):
        FeaturePlan.for_search(_search("{backbones: lite_a, cuts: half}"), {"lite_a": ["all", "top"]})
