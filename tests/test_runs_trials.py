"""Trial records and trials.parquet (`automl.runs.trials`): typed, round-tripped, and old tables still read."""

from __future__ import annotations

import json
from pathlib import Path

import fastparquet
import pandas as pd
import pytest

from automl.runs import BASELINE, Epoch, RunFolderError, TrialRecord, TrialStatus, TrialTable
from automl.runs.trials import SCHEMA, SCHEMA_KEY


def _trials() -> TrialTable:
    mlp = {"backbone": "efficientnet_lite0", "cut": "all", "head": "mlp", "mlp_hidden": 512, "dropout": 0.2}
    return TrialTable(
        (
            TrialRecord(
                "a1",
                "mlp-a1",
                TrialStatus.COMPLETE,
                {**mlp, "optimizer": "adam", "learning_rate": 3e-3},
                val_accuracy=0.9,
                seconds=12.0,
                epochs=2,
                best_epoch=2,
                cache_hits=120,
                history=(Epoch(val_accuracy=0.8, train_loss=1.0), Epoch(val_accuracy=0.9, train_loss=0.5)),
            ),
            TrialRecord(
                "b2", "svm-b2", TrialStatus.COMPLETE, {"head": "svm", "svm_c": 1.0}, val_accuracy=0.9, seconds=5.0
            ),
            TrialRecord("c3", "c3", TrialStatus.PRUNED, {"head": "softmax"}, val_accuracy=0.95, epochs=2),
            TrialRecord("d4", "d4", TrialStatus.FAILED, {"head": "softmax"}, error="ValueError: boom", failures=2),
            TrialRecord("e5", "e5", TrialStatus.RUNNING, {"head": "softmax"}, val_accuracy=0.5),
            TrialRecord(
                BASELINE, BASELINE, TrialStatus.COMPLETE, {"head": "softmax"}, val_accuracy=0.85, baseline=True
            ),
        )
    )


def test_best_counts_and_states_follow_optunas_frozen_trials() -> None:
    trials = _trials()
    best = trials.best()
    assert best is not None and best.name == "svm-b2", "a complete trial, highest accuracy, ties to the faster"
    assert trials.counts().__dict__ == {"done": 3, "complete": 2, "pruned": 1, "running": 1, "pending": 0, "failed": 1}
    assert [t.name for t in trials.get([TrialStatus.COMPLETE], baseline=False)] == ["mlp-a1", "svm-b2"]
    assert trials.first_error() == "ValueError: boom"
    assert [t.name for t in trials.ranked()][:2] == ["c3", "svm-b2"], "best first; the faster wins a tie"


def test_the_table_round_trips_with_ints_kept_ints_and_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "trials.parquet"
    trials = _trials().ranked()
    trials.write(path)
    assert fastparquet.ParquetFile(str(path)).key_value_metadata[SCHEMA_KEY] == str(SCHEMA)
    read = TrialTable.read(path)
    assert read == trials
    mlp = next(t for t in read if t.name == "mlp-a1")
    assert type(mlp.params["mlp_hidden"]) is int and mlp.describe().startswith("efficientnet_lite0/all mlp(512, ")
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"], "written through a temporary, none left"


def test_a_table_written_before_schema_2_still_reads(tmp_path: Path) -> None:
    """Schema 1: one `param_` column per dimension (a float where some trials lack it), `epoch_` JSON lists."""
    path = tmp_path / "trials.parquet"
    old = pd.DataFrame(
        [
            {
                "trial_id": "x1",
                "name": "x1",
                "status": "complete",
                "val_accuracy": 0.7,
                "seconds": 3.0,
                "param_head": "mlp",
                "param_mlp_hidden": 512.0,
                "epoch_val_accuracy": json.dumps([0.6, 0.7]),
            },
            {
                "trial_id": "x2",
                "name": "x2",
                "status": "pruned",
                "val_accuracy": 0.5,
                "seconds": 1.0,
                "param_head": "softmax",
                "param_mlp_hidden": None,
                "epoch_val_accuracy": json.dumps([0.5]),
            },
        ]
    )
    fastparquet.write(str(path), old)  # no schema key, as the old writer wrote it
    read = TrialTable.read(path)
    first = read.trials[0]
    assert first.params == {"head": "mlp", "mlp_hidden": 512} and type(first.params["mlp_hidden"]) is int
    assert [e.val_accuracy for e in first.history] == [0.6, 0.7] and first.epochs == 2
    assert read.trials[1].params == {"head": "softmax"}, "a missing value is no parameter, not NaN"


def test_a_table_from_a_newer_automl_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trials.parquet"
    fastparquet.write(str(path), pd.DataFrame({"name": ["x"]}), custom_metadata={SCHEMA_KEY: str(SCHEMA + 1)})
    with pytest.raises(RunFolderError, match=r"trials\.parquet: trials table schema 3, newer"):
        TrialTable.read(path)
    path.write_bytes(b"PAR1 cut short")
    with pytest.raises(RunFolderError, match=r"trials\.parquet: not a readable trials table"):
        TrialTable.read(path)
