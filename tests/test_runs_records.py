"""summary.json and metrics.json as records (`automl.runs.records`), and run folders written before them.

A run folder written before the typed records (schema 1 trials.parquet, metrics.json's `val_top1`)
still opens in `automl status` and `automl report`; a damaged record is refused with a message naming
the file and the key. (`serve` reads only `model/`, whose layout did not change: test_serve_app covers it.)
"""

from __future__ import annotations

import json
from pathlib import Path

import fastparquet
import pandas as pd
import pytest
from typer.testing import CliRunner

from automl.cli.main import app
from automl.report import write_report
from automl.runs import RunFolder, RunFolderError, Summary, TestMetrics

OLD_SUMMARY = {
    "run_dir": "/elsewhere/runs/animals10-20261101-120000",
    "recipe": "animals10",
    "stop_reason": "trials",
    "wall_seconds": 412.3,
    "budget_seconds": 600,
    "trials": {"done": 2, "complete": 1, "pruned": 1, "running": 0, "pending": 0, "failed": 0},
    "best": {
        "trial": "lite0-all-mlp-adam-0001",
        "config": {"head": "mlp", "mlp_hidden": 512},
        "val_accuracy": 0.93,
        "test_top1": 0.91,
        "test_top1_ci95": [0.88, 0.93],
        "test_top5": 0.99,
    },
    "baseline": {"config": {"head": "softmax"}, "val_accuracy": 0.9},
    "feature_seconds": 30.5,
    "cache": {"seconds": 30.5, "cache_hits": 0, "cache_misses": 800, "failed": [], "repaired": []},
    "phases": {"ray_start": 4.0, "features": 30.5, "trials": 300.0},
    "model": "/elsewhere/runs/animals10-20261101-120000/model",
    "ray": {"address": None, "dashboard": None, "nodes": 1},
}


def _old_run(root: Path) -> RunFolder:
    """A finished run folder as automl wrote it before 2026-11-30 (no model: status and report do not load it)."""
    folder = RunFolder(root)
    root.mkdir()
    folder.recipe.write_text("data: {folder: animals10}\n", encoding="utf-8")
    folder.summary.write_text(json.dumps(OLD_SUMMARY), encoding="utf-8")
    folder.metrics.write_text(json.dumps({"split": "test", "n": 120, "top1": 0.91, "val_top1": 0.93}), encoding="utf-8")
    rows = [
        {
            "trial_id": "0001",
            "name": "lite0-all-mlp-adam-0001",
            "status": "complete",
            "val_accuracy": 0.93,
            "seconds": 20.0,
            "epochs": 3,
            "param_backbone": "lite0",
            "param_cut": "all",
            "param_head": "mlp",
            "param_mlp_hidden": 512.0,
            "param_dropout": 0.2,
            "param_optimizer": "adam",
            "param_learning_rate": 0.003,
            "param_epsilon": 1e-7,
            "param_batch_size": 32.0,
            "epoch_val_accuracy": "[0.9, 0.92, 0.93]",
            "baseline": False,
        },
        {
            "trial_id": "0002",
            "name": "lite0-all-softmax-sgd-0002",
            "status": "pruned",
            "val_accuracy": 0.6,
            "seconds": 5.0,
            "epochs": 2,
            "param_backbone": "lite0",
            "param_cut": "all",
            "param_head": "softmax",
            "param_mlp_hidden": None,
            "param_dropout": None,
            "param_optimizer": "sgd",
            "param_learning_rate": 0.0001,
            "param_epsilon": None,
            "param_batch_size": 64.0,
            "epoch_val_accuracy": "[0.5, 0.6]",
            "baseline": False,
        },
    ]
    fastparquet.write(str(folder.trials), pd.DataFrame(rows))
    return folder


def test_an_old_run_folder_opens_in_status_with_its_ints_as_ints(tmp_path: Path) -> None:
    folder = _old_run(tmp_path / "animals10-20261101-120000")
    result = CliRunner().invoke(app, ["status", str(folder.root), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["state"] == "finished" and payload["counts"]["complete"] == 1 and payload["counts"]["pruned"] == 1
    assert payload["trials"][0]["param_mlp_hidden"] == 512 and payload["summary"]["best"]["test_top1"] == 0.91
    table = CliRunner().invoke(app, ["status", str(folder.root)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "mlp(512, dropout 0.2)" in table.stdout and "bs=64" in table.stdout


def test_an_old_run_folder_opens_in_report_with_its_validation_accuracy(tmp_path: Path) -> None:
    folder = _old_run(tmp_path / "animals10-20261101-120000")
    page = write_report(folder.root).read_text(encoding="utf-8")
    assert "lite0-all-mlp-adam-0001" in page and "mlp(512, dropout 0.2)" in page
    assert TestMetrics.read(folder.metrics).val_accuracy == 0.93, "metrics.json's old `val_top1` is read"


def test_records_round_trip_and_a_damaged_one_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    summary = Summary.model_validate(OLD_SUMMARY)
    summary.write(tmp_path / "summary.json")
    assert Summary.read(tmp_path / "summary.json") == summary
    assert json.loads(summary.to_json())["best"]["config"]["mlp_hidden"] == 512, "an int stays an int"
    assert set(OLD_SUMMARY) <= set(json.loads(summary.to_json())), "the documented --json keys are all kept"

    damaged = {**OLD_SUMMARY, "trials": {"done": "many"}}
    (tmp_path / "summary.json").write_text(json.dumps(damaged), encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"summary.json.*trials\.done"):
        Summary.read(tmp_path / "summary.json")
    folder = _old_run(tmp_path / "run")
    folder.summary.write_text(json.dumps(damaged), encoding="utf-8")
    result = CliRunner().invoke(app, ["status", str(folder.root)])
    assert isinstance(result.exception, RunFolderError) and "trials.done" in str(result.exception)


def test_status_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert "not a search run folder" in str(result.exception)
