"""The Tune callbacks a search runs with: the Optuna study's end, Ray custom metrics, MLflow child runs when on."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from automl.monitoring.mlflow_logging import Tracking, TrialRuns
from automl.monitoring.optuna_study import RunStudySearch, StudyEnd
from automl.monitoring.ray_metrics import SearchMetrics


def tune_callbacks(run_dir: Path, metric: str, searcher: RunStudySearch) -> list[Callback]:
    """Callbacks for the Tune experiment of `run_dir`; `metric` is the score the search maximises.

    MLflow is on when `start_tracking` left the parent run's ids in the run folder.
    """
    callbacks: list[Callback] = [StudyEnd(searcher), SearchMetrics(run=Path(run_dir).name, metric=metric)]
    parent = Tracking.of_run(run_dir)
    if parent is not None:
        callbacks.append(TrialRuns(parent))
    return callbacks
