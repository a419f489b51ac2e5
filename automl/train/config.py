"""A trial's training configuration: the plain dict the search passes around, read into a typed view.

The search keeps configurations as plain dicts (Optuna/Ray Tune parameters, Parquet rows); training
reads the keys it needs through `TrainConfig.from_dict`, which fills missing keys from the baseline and
names the key of any bad value. Keys training does not read (`backbone`, `cut`, ...) are kept untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from automl.errors import InputError

HeadName = Literal["softmax", "mlp", "svm"]
OptimizerName = Literal["sgd", "adam"]
HEADS: tuple[HeadName, ...] = ("softmax", "mlp", "svm")
OPTIMIZERS: tuple[OptimizerName, ...] = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """What training needs from a configuration. Defaults are the baseline (the default model trained alone).

    `dropout` applies to the `mlp` head only, `svm_c` to the `svm` head only (the liblinear/Tang 2013 C:
    the objective is ½‖W‖² + C·Σ squared hinge), `epsilon` to Adam only (Keras's default 1e-7),
    `momentum` to SGD only.
    """

    head: HeadName = "softmax"
    optimizer: OptimizerName = "adam"
    learning_rate: float = 1e-3
    epsilon: float = 1e-7
    momentum: float = 0.9
    mlp_hidden: int = 512
    dropout: float = 0.2
    svm_c: float = 1.0
    batch_size: int = 32
    epochs: int = 20
    seed: int = 0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrainConfig:
        """Read the training keys of `config`; raises `InputError` naming the key of a bad value."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in config:
                continue
            value = config[spec.name]
            default = getattr(cls, spec.name)
            try:
                values[spec.name] = _coerce(value, type(default))
            except (TypeError, ValueError):
                raise InputError(
                    f"training config key {spec.name!r}: {value!r} is not of type {type(default).__name__}",
                    hint=f"give a value like the default, {default!r}",
                ) from None
        parsed = cls(**values)
        parsed._check()
        return parsed

    def _check(self) -> None:
        problems = {
            "head": (self.head in HEADS, f"must be one of {', '.join(HEADS)}"),
            "optimizer": (self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
            "learning_rate": (self.learning_rate > 0, "must be > 0"),
            "epsilon": (self.epsilon > 0, "must be > 0"),
            "momentum": (0 <= self.momentum < 1, "must be in [0, 1)"),
            "mlp_hidden": (self.mlp_hidden > 0, "must be > 0"),
            "dropout": (0 <= self.dropout < 1, "must be in [0, 1)"),
            "svm_c": (self.svm_c > 0, "must be > 0"),
            "batch_size": (self.batch_size > 0, "must be > 0"),
            "epochs": (self.epochs > 0, "must be > 0"),
        }
        for key, (ok, rule) in problems.items():
            if not ok:
                raise InputError(f"training config key {key!r}: {getattr(self, key)!r} {rule}")


def _coerce(value: Any, kind: type) -> Any:
    """Accept what Optuna/Parquet hand back (numpy scalars, ints for floats), refuse silent truncation."""
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is int:
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError(value)
        return int(as_float)
    if kind is float:
        return float(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def baseline_config() -> dict[str, Any]:
    """The default configuration (softmax head on cut `all`, Adam at lr 1e-3), which the search must match or beat."""
    return {"cut": "all", **asdict(TrainConfig())}
