"""Trials named by what they run, in one line: `lite1/all svm C=9.2 adam lr=0.003`.

Ray's dashboard lists each Tune trial as an actor. A function trainable's actor is an anonymous
`ImplicitFunc`; Ray takes an actor's `repr()` once, right after its `__init__`, as the actor's
`repr_name` (the dashboard's Actors view and the names of the actor's tasks, `<repr>.train`). So trials run
in an `AutomlTrial` actor whose repr is its trial's configuration.

Tune reuses a trial actor for the next trial (`reuse_actors=True`: a new actor would import TensorFlow again,
seconds per trial), and Ray never asks for the repr again: a reused actor keeps the name of its first trial.
Each trial therefore also prints its name and configuration as it starts, into the actor's log (the
dashboard's Logs view of that actor); Optuna's dashboard has every trial's label as a user attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def trial_label(config: Mapping[str, Any]) -> str:
    """`lite1/all svm C=9.2 adam lr=0.003`: backbone/cut, head (with its own settings), optimizer, learning rate."""
    backbone = str(config.get("backbone", "?"))
    if backbone.startswith("efficientnet_lite"):
        backbone = backbone.removeprefix("efficientnet_")
    head = str(config.get("head", "?"))
    if head == "svm":
        head += f" C={_short(config.get('svm_c'))}"
    elif head == "mlp":
        head += f"({_short(config.get('mlp_hidden'))}, dropout {_short(config.get('dropout'))})"
    label = f"{backbone}/{config.get('cut', '?')} {head} {config.get('optimizer', '?')}"
    if "learning_rate" in config:
        label += f" lr={_short(config['learning_rate'])}"
    return label


def _short(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else f"{value:.2g}"
    return "?" if value is None else str(value)


def named_trials(trainable: Callable[..., Any]) -> type:
    """A Tune trainable class running the function `trainable` (as Tune would), whose actors bear trial names.

    `trainable` may carry `tune.with_parameters` and `tune.with_resources`; both are kept.
    """
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(trainable)

    class AutomlTrial(base):  # type: ignore[misc, valid-type]
        def __repr__(self) -> str:
            config = getattr(self, "config", None)
            return trial_label(config) if config else "AutomlTrial"

        def setup(self, config: dict[str, Any]) -> None:
            self._announce(config)
            super().setup(config)

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._announce(new_config)
            return super().reset_config(new_config)

        def _announce(self, config: dict[str, Any]) -> None:
            print(f"trial {self.trial_name}: {trial_label(config)}", flush=True)

    AutomlTrial.__name__ = AutomlTrial.__qualname__ = "AutomlTrial"
    return AutomlTrial
