"""The search space: conditional dimensions, fixed values, seeded samplers and an exhaustive grid (no Ray)."""

from __future__ import annotations

import json

import optuna
import pytest

from automl.errors import RecipeError
from automl.recipe import parse_recipe
from automl.search.space import GRID_POINTS, build_space, grid_values

CUTS = {"lite_a": ["all", "top", "half", "none"], "lite_b": ["all", "half"]}


def _space(search: str, cuts: dict[str, list[str]] | None = None):
    recipe = parse_recipe(f"data: {{folder: x}}\nsearch: {search}\n")
    return build_space(recipe.search, cuts or CUTS)


def _sample(space, n: int, seed_value: float = 0.5) -> list[tuple[dict, dict]]:
    """(config, Optuna params) of `n` trials asked and told on a fresh study with the space's sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=space.sampler())
    out = []
    for _ in range(n):
        trial = study.ask()
        config = space(trial)
        study.tell(trial, seed_value)
        out.append((config, dict(trial.params)))
    return out


def test_cuts_offered_depend_on_the_backbone_and_the_recipe():
    space = _space("{backbones: [lite_a, lite_b], cuts: [top, half], sampler: random, finetune: false}")
    assert space.cuts_by_backbone == {"lite_a": ("top", "half"), "lite_b": ("half",)}
    seen = set()
    for config, params in _sample(space, 40):
        seen.add((config["backbone"], config["cut"]))
        assert config["cut"] in space.cuts_by_backbone[config["backbone"]]
        # differing cut sets need per-backbone Optuna names; lite_b's single cut is fixed, not sampled
        assert "cut" not in params
        assert ("cut@lite_b" in params) is False
    assert seen == {("lite_a", "top"), ("lite_a", "half"), ("lite_b", "half")}


def test_conditional_dimensions_exist_only_with_their_head_and_optimizer():
    space = _space("{backbones: lite_a, heads: [softmax, mlp, svm], optimizers: [sgd, adam], sampler: random}")
    heads, optimizers = set(), set()
    for config, params in _sample(space, 60):
        heads.add(config["head"])
        optimizers.add(config["optimizer"])
        assert ("mlp_hidden" in params) == ("dropout" in params) == (config["head"] == "mlp")
        assert ("svm_c" in params) == (config["head"] == "svm")
        assert ("epsilon" in params) == (config["optimizer"] == "adam")
        assert ("epsilon" in config) == (config["optimizer"] == "adam")
        assert ("momentum" in config) == (config["optimizer"] == "sgd")
        assert "momentum" not in params  # fixed by default (0.9): a constant, never sampled
        assert 1e-4 <= config["learning_rate"] <= 1e-1
    assert heads == {"softmax", "mlp", "svm"} and optimizers == {"sgd", "adam"}


def test_one_value_dimensions_are_fixed_not_sampled():
    space = _space("{backbones: lite_a, cuts: all, heads: mlp, optimizers: adam, learning_rate: 0.01, batch_size: 64}")
    config, params = _sample(space, 1)[0]
    assert config["backbone"] == "lite_a" and config["cut"] == "all" and config["learning_rate"] == 0.01
    assert config["batch_size"] == 64 and config["epochs"] == 20
    assert set(params) == {"mlp_hidden", "dropout", "epsilon"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_samplers_are_seeded(sampler):
    search = f"{{backbones: [lite_a, lite_b], heads: [softmax, svm], sampler: {sampler}, seed: 3}}"
    first = [config for config, _ in _sample(_space(search), 12)]
    again = [config for config, _ in _sample(_space(search), 12)]
    other = [config for config, _ in _sample(_space(search.replace("seed: 3", "seed: 4")), 12)]
    assert first == again
    assert first != other


def test_grid_tries_every_distinct_configuration_once():
    space = _space(
        "{backbones: [lite_a, lite_b], cuts: [all, half], heads: [softmax, svm], sampler: grid, finetune: false}"
    )
    configurations = space.configurations()
    keys = {json.dumps(c, sort_keys=True) for c in configurations}
    # (lite_a: 2 cuts + lite_b: 2 cuts) × (softmax 1 + svm 3 C values) × (sgd 3 lr + adam 3 lr × 3 eps) × 2 batch
    assert len(keys) == len(configurations) == 4 * (1 + GRID_POINTS) * (GRID_POINTS + GRID_POINTS**2) * 2
    sampled = [json.dumps(config, sort_keys=True) for config, _ in _sample(space, len(configurations))]
    assert set(sampled) == keys  # the whole grid, no configuration twice


def test_grid_discretises_continuous_ranges_with_both_ends():
    recipe = parse_recipe("data: {folder: x}\nsearch: {learning_rate: {low: 1.0e-4, high: 1.0e-1}}\n")
    assert grid_values(recipe.search.learning_rate) == [1e-4, 3.16e-3, 1e-1]
    linear = parse_recipe("data: {folder: x}\nsearch: {momentum: {low: 0.5, high: 0.9, log: false}}\n")
    assert grid_values(linear.search.momentum) == [0.5, 0.7, 0.9]
    assert grid_values(parse_recipe("data: {folder: x}\nsearch: {momentum: 0.9}\n").search.momentum) == [0.9]


def test_cut_none_is_offered_only_when_the_recipe_asks():
    default = _space("{backbones: lite_a, sampler: grid}")
    assert {c["cut"] for c in default.configurations()} == {"all"}
    asked = _space("{backbones: lite_a, cuts: [all, none], sampler: grid}")
    assert {c["cut"] for c in asked.configurations()} == {"all", "none"}


def test_a_backbone_without_any_recipe_cut_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"search.cuts: backbone lite_b offers none of \['top'\]"):
        _space("{backbones: [lite_a, lite_b], cuts: top}")
