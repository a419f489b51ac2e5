"""The search dimensions, declared once: what each is called, where the recipe lists its values, when it
exists, whether training reads it, and how a trial's one-line description shows it.

Everything that walks the dimensions reads this table: the Optuna space (`automl.search.space`), the
trial records and their description (`automl.runs`), the baseline's row, the report's tables. The
recipe declares each dimension's values under `recipe_field` (`automl.recipe.SearchSection`, checked
against this table by the tests), training reads the dimensions marked `trains` as
`automl.train.TrainConfig` fields. Adding a dimension or a head's own setting is one line here, its
recipe field and its training code.

Order matters: a conditional dimension follows the one it depends on (the space samples in this
order, and a description reads in it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, SupportsFloat

Value = str | int | float
"""A dimension's value in a configuration (bool is not one: Parquet and Optuna would turn it into 0/1)."""


@dataclass(frozen=True)
class Dimension:
    name: str
    """Key in a trial's configuration, in its record's `params`, and (if `trains`) the TrainConfig field."""
    recipe_field: str
    """`SearchSection` field holding its choices (a list) or its range (a `FloatRange`)."""
    kind: Literal["choice", "range"]
    type: type[str] | type[int] | type[float]
    display: str
    """How a trial's description shows it: a format with one `{}`, pieces are joined without spaces."""
    when: tuple[str, str] | None = None
    """(dimension, value): this one exists only when that dimension took that value."""
    trains: bool = True
    """Read by training; False for the features' own choices (backbone, cut)."""

    def applies(self, config: Mapping[str, object]) -> bool:
        """Whether this dimension exists for a configuration (its condition met)."""
        return self.when is None or config.get(self.when[0]) == self.when[1]

    def coerce(self, value: object) -> Value:
        """The value as its declared type: 512.0 from a float column is 512, numpy scalars become plain."""
        if self.type is int:
            number = _number(value)
            if not number.is_integer():
                raise ValueError(f"{self.name}: {value!r} is not a whole number")
            return int(number)
        if self.type is float:
            return _number(value)
        return str(value)


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("backbone", "backbones", "choice", str, "{}", trains=False),
    Dimension("cut", "cuts", "choice", str, "/{}", trains=False),
    Dimension("head", "heads", "choice", str, " {}"),
    Dimension("mlp_hidden", "mlp_hidden", "choice", int, "({}", when=("head", "mlp")),
    Dimension("dropout", "dropout", "choice", float, ", dropout {})", when=("head", "mlp")),
    Dimension("svm_c", "svm_c", "range", float, "(C={})", when=("head", "svm")),
    Dimension("optimizer", "optimizers", "choice", str, " {}"),
    Dimension("learning_rate", "learning_rate", "range", float, " lr={}"),
    Dimension("epsilon", "epsilon", "range", float, " eps={}", when=("optimizer", "adam")),
    Dimension("momentum", "momentum", "range", float, " momentum={}", when=("optimizer", "sgd")),
    Dimension("batch_size", "batch_size", "choice", int, " bs={}"),
)
BY_NAME: dict[str, Dimension] = {dimension.name: dimension for dimension in DIMENSIONS}
CONTINUOUS: frozenset[str] = frozenset(d.name for d in DIMENSIONS if d.kind == "range")
"""Continuous dimensions: sampled as floats, binned in the report's tables."""


def params_of(config: Mapping[str, object]) -> dict[str, Value]:
    """The dimensions a configuration has (conditions applied), each as its declared type.

    The baseline's configuration carries every training default (an MLP width for a softmax head):
    only the dimensions that exist for it are its parameters, as for a sampled trial.
    """
    return {d.name: d.coerce(config[d.name]) for d in DIMENSIONS if d.name in config and d.applies(config)}


def describe(params: Mapping[str, Value | None]) -> str:
    """`efficientnet_lite0/all mlp(512, dropout 0.2) adam lr=0.003 eps=1e-07 bs=32`: a configuration in one line."""
    return "".join(d.display.format(_short(params.get(d.name))) for d in DIMENSIONS if d.applies(params))


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | SupportsFloat):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _short(value: Value | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"
