"""The search-space tables of the report: continuous dimensions are binned, categorical ones listed by value."""

from __future__ import annotations

import pandas as pd

from automl.report.analysis import dimension_table


def trials(**params: list[object]) -> pd.DataFrame:
    accuracies = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4]
    n = len(next(iter(params.values())))
    return pd.DataFrame(
        {"val_accuracy": accuracies[:n], "status": ["complete"] * n, **{f"param_{k}": v for k, v in params.items()}}
    )


def test_momentum_from_a_linear_range_is_binned_not_listed_value_by_value() -> None:
    rows = dimension_table(trials(momentum=[0.0, 0.31, 0.62, 0.9, 0.95, 0.97]), "momentum")

    assert [row["value"] for row in rows] == ["0–0.242", "0.242–0.485", "0.485–0.728", "0.728–0.97"]
    assert [row["n"] for row in rows] == [1, 1, 1, 3]
    assert rows[-1]["best"] == 0.9 and rows[-1]["median"] == 0.8


def test_a_learning_rate_spanning_decades_is_binned_by_decade_per_optimizer() -> None:
    frame = trials(
        learning_rate=[1e-4, 5e-4, 2e-3, 3e-2, 0.05, 0.002], optimizer=["sgd", "sgd", "sgd", "adam", "adam", "adam"]
    )
    rows = {row["value"]: row["n"] for row in dimension_table(frame, "learning_rate")}

    assert rows == {"adam 1e-3–1e-2": 1, "adam 1e-2–1e-1": 2, "sgd 1e-4–1e-3": 2, "sgd 1e-3–1e-2": 1}


def test_categorical_dimensions_keep_one_row_per_value() -> None:
    rows = dimension_table(trials(batch_size=[32.0, 64.0, 32.0, 64.0]), "batch_size")
    assert [(row["value"], row["n"]) for row in rows] == [(32, 2), (64, 2)]
