"""MLflow stays out of a search unless asked for; asked for but missing or refusing, it says so (no Ray, no search)."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console

from automl.errors import AutomlError
from automl.monitoring.mlflow_logging import Tracking, start_tracking
from automl.runs import RunFolder


def test_without_a_tracking_uri_nothing_is_logged_or_written(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    console = Console(record=True, width=200)
    assert start_tracking(tmp_path, "animals10", {"data": {"folder": "x"}}, console) is None
    assert console.export_text() == "" and not RunFolder(tmp_path).tracking.exists()
    assert Tracking.of_run(tmp_path) is None


def test_a_tracking_uri_without_mlflow_installed_warns_once_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    console = Console(record=True, width=200)
    assert start_tracking(tmp_path, "animals10", {"data": {"folder": "x"}}, console) is None
    assert "pip install 'automl[mlflow]'" in console.export_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no store, no run file"


def test_a_store_mlflow_refuses_is_a_clear_error_naming_the_variable(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'automl[mlflow]')")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3.17 refuses folder stores without it
    with pytest.raises(AutomlError) as refused:
        start_tracking(tmp_path, "animals10", {}, Console(record=True))
    assert "MLFLOW_TRACKING_URI=file:" in str(refused.value) and "sqlite:///mlflow.db" in refused.value.hint
    assert not RunFolder(tmp_path).tracking.exists()
