"""The search dimensions declared once (`automl.dimensions`) agree with the recipe and training."""

from __future__ import annotations

from dataclasses import fields

from automl.dimensions import DIMENSIONS, describe, params_of
from automl.recipe import SearchSection
from automl.train.config import TrainConfig, baseline_config


def test_every_dimension_has_its_recipe_field_and_training_field() -> None:
    recipe_fields = SearchSection.model_fields
    for dimension in DIMENSIONS:
        assert dimension.recipe_field in recipe_fields, f"{dimension.name}: no search.{dimension.recipe_field}"
        is_range = "FloatRange" in str(recipe_fields[dimension.recipe_field].annotation)
        assert is_range == (dimension.kind == "range"), f"{dimension.name}: kind differs from the recipe's field"
        if dimension.trains:
            assert dimension.name in {spec.name for spec in fields(TrainConfig)}, f"{dimension.name}: not trained"
            assert type(getattr(TrainConfig(), dimension.name)) is dimension.type, f"{dimension.name}: type differs"
        if dimension.when:
            parent = next(d for d in DIMENSIONS if d.name == dimension.when[0])
            assert DIMENSIONS.index(parent) < DIMENSIONS.index(dimension), "a condition's dimension comes first"
    searched = {
        n
        for n, f in recipe_fields.items()
        if str(f.annotation).startswith(("list", "<class 'automl.recipe.FloatRange"))
    }
    assert searched <= {d.recipe_field for d in DIMENSIONS}, "every list of values in the recipe is a dimension"


def test_the_baseline_has_only_the_dimensions_that_exist_for_it() -> None:
    params = params_of({**baseline_config(), "backbone": "efficientnet_lite0"})
    assert params == {
        "backbone": "efficientnet_lite0",
        "cut": "all",
        "head": "softmax",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "epsilon": 1e-7,
        "batch_size": 32,
    }, "no MLP width for a softmax head, no momentum for Adam"
    assert describe(params) == "efficientnet_lite0/all softmax adam lr=0.001 eps=1e-07 bs=32"


def test_values_come_back_as_their_declared_type() -> None:
    params = params_of({"head": "mlp", "mlp_hidden": 512.0, "dropout": 0, "optimizer": "sgd", "momentum": "0.9"})
    assert params == {"head": "mlp", "mlp_hidden": 512, "dropout": 0.0, "optimizer": "sgd", "momentum": 0.9}
    assert type(params["mlp_hidden"]) is int and type(params["dropout"]) is float
    assert describe(params) == "?/? mlp(512, dropout 0) sgd lr=? momentum=0.9 bs=?"
