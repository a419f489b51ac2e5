"""What the trials say about the search space: Optuna's parameter importances and per-dimension tables.

The input is `TrialTable.to_frame()`: one row per trial, one `param_<dimension>` column per dimension
of `automl.dimensions` (continuous ones are binned in the tables, continuous for Optuna).

The per-dimension tables are the reference studies' comparison tables (frozen or not, NN or SVM head,
SGD or Adam per learning rate): for each value of a dimension, the best and the median validation
accuracy of the trials that used it. Trials stopped early by the scheduler count with the accuracy
they had reached, as Optuna sees them; failed trials are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from automl.dimensions import CONTINUOUS as CONTINUOUS_DIMENSIONS
from automl.runs.trials import PARAM_PREFIX, TrialStatus
from automl.search.budget import METRIC

LINEAR_BINS = 4
"""Equal-width bins of a continuous dimension whose values do not span a decade (or include 0)."""


def scored(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that reached a validation accuracy (complete or stopped early), failed ones left out."""
    if trials.empty or METRIC not in trials:
        return trials.iloc[0:0]
    keep = trials[METRIC].notna() & (trials["status"] != TrialStatus.FAILED)
    return trials[keep]


def dimensions(trials: pd.DataFrame) -> list[str]:
    """Search dimensions that took more than one value (a fixed one explains nothing)."""
    names = [c.removeprefix(PARAM_PREFIX) for c in trials.columns if c.startswith(PARAM_PREFIX)]
    return [n for n in names if trials[PARAM_PREFIX + n].dropna().nunique() > 1]


def _bins(values: pd.Series) -> tuple[np.ndarray, dict[float, str]]:
    """Each value's bin (its lower edge) and each used bin's label.

    By decade when the values are positive and span at least one (learning rates, SVM C); otherwise
    `LINEAR_BINS` equal widths (momentum 0.8-0.99, or a linear range that starts at 0).
    """
    x = values.to_numpy(dtype=float)
    low, high = x.min(), x.max()
    if low > 0 and np.log10(high) - np.log10(low) >= 1:
        decades = np.floor(np.log10(x))
        return decades, {d: f"1e{int(d)}–1e{int(d) + 1}" for d in map(float, np.unique(decades))}
    edges = np.linspace(low, high, LINEAR_BINS + 1)
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, LINEAR_BINS - 1)
    return edges[index], {float(edges[i]): f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in np.unique(index)}


def _summarise(groups: pd.core.groupby.DataFrameGroupBy) -> list[dict[str, Any]]:
    rows = []
    for key, group in groups:
        values = group[METRIC].to_numpy(dtype=float)
        rows.append({"value": key, "n": len(values), "best": float(values.max()), "median": float(np.median(values))})
    return rows


def dimension_table(trials: pd.DataFrame, name: str) -> list[dict[str, Any]]:
    """Best and median validation accuracy per value of one dimension (per bin for continuous ones, see `_bins`).

    The learning rate is split by optimizer as well, since SGD and Adam want very different rates.
    """
    column = PARAM_PREFIX + name
    frame = scored(trials)
    frame = frame[frame[column].notna()]
    if frame.empty:
        return []
    keys: list[Any] = []
    if name in CONTINUOUS_DIMENSIONS:
        starts, labels = _bins(frame[column])
        frame = frame.assign(_bin=starts)
        by_optimizer = name == "learning_rate" and PARAM_PREFIX + "optimizer" in frame
        keys = [PARAM_PREFIX + "optimizer", "_bin"] if by_optimizer else ["_bin"]
        rows = _summarise(frame.groupby(keys, sort=True))
        for row in rows:
            *optimizer, start = row["value"]
            row["value"] = " ".join([*map(str, optimizer), labels[float(start)]])
        return rows
    rows = _summarise(frame.groupby(column, sort=True))
    for row in rows:
        value = row["value"]
        row["value"] = int(value) if isinstance(value, float) and value.is_integer() else value
    return rows


def _distributions(frame: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    found: dict[str, Any] = {}
    for name in names:
        values = frame[PARAM_PREFIX + name].dropna()
        if name in CONTINUOUS_DIMENSIONS:
            found[name] = FloatDistribution(float(values.min()), float(values.max()), log=bool(values.min() > 0))
        else:
            found[name] = CategoricalDistribution(sorted({_plain(v) for v in values}, key=str))
    return found


def _plain(value: Any) -> Any:
    """A NumPy scalar as a Python one (Optuna's categorical choices must be plain)."""
    return value.item() if hasattr(value, "item") else value


def parameter_importances(trials: pd.DataFrame) -> tuple[dict[str, float], str]:
    """Optuna's importances (fANOVA, else mean decrease in impurity) of a study rebuilt from the trials.

    Returns the importances (summing to 1, largest first) and the method used, or `{}` and the
    reason when there is too little to go on. Optuna weighs only dimensions every trial has, so
    conditional ones (Adam's epsilon, the MLP's width) appear only when every trial used them.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    frame = scored(trials)
    names = dimensions(frame)
    if len(frame) < 3 or not names:
        return {}, "too few scored trials or no dimension that varied"
    distributions = _distributions(frame, names)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for _, row in frame.iterrows():
        params = {n: _plain(row[PARAM_PREFIX + n]) for n in names if pd.notna(row[PARAM_PREFIX + n])}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={n: distributions[n] for n in params}, value=float(row[METRIC])
            )
        )
    for method, evaluator in (
        ("fANOVA", FanovaImportanceEvaluator),
        ("mean decrease impurity", MeanDecreaseImpurityImportanceEvaluator),
    ):
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator(seed=0))
        except (RuntimeError, ValueError) as exc:
            reason = f"{method} failed: {exc}"
            continue
        return {name: float(value) for name, value in importances.items()}, method
    return {}, reason
