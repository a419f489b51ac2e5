"""MLflow, optional (`pip install automl[mlflow]`): one parent run per search, one child run per trial.

On when `MLFLOW_TRACKING_URI` is set and `mlflow` imports; otherwise nothing changes (a set URI without
mlflow installed gets one warning line). The experiment is named after the recipe.

- Parent run (`start_tracking`, in the driver before the trials): the recipe as parameters, tag
  `automl.run_dir`; its ids are kept in `<run>/mlflow.json`, so a resumed search logs into the same parent.
  At the end (`Tracking.finish`): test and validation metrics, trial counts, and as artifacts the exported
  model (`model/`), `report.html`, `metrics.json`, `summary.json`, `trials.parquet`, the recipe and the
  Optuna study.
- Child runs (`TrialRuns`, Ray Tune's `MLflowLoggerCallback` with the parent's id as `mlflow.parentRunId`):
  the trial's configuration as parameters, each epoch's metrics at its step (one batch per epoch: Ray's
  callback would write each number in its own transaction), the final report's metrics once (its `val_*`
  are the best epoch's, logged as `best_val_*`), and tag `automl.status` (complete | pruned | failed).

MLflow 3.17 refuses a plain-folder store (`file:` URIs) unless `MLFLOW_ALLOW_FILE_STORE=true`; its own
recommendation for a local store is SQLite: `MLFLOW_TRACKING_URI=sqlite:///mlflow.db`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, TRAINING_ITERATION

from automl.atomic import write_atomic
from automl.errors import AutomlError
from automl.runs.folder import RunFolder
from automl.runs.trials import TrialStatus, ended_status

if TYPE_CHECKING:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial
    from rich.console import Console

URI_VARIABLE = "MLFLOW_TRACKING_URI"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Tracking:
    """The search's parent run."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    run_id: str

    @classmethod
    def of_run(cls, run_dir: Path) -> Tracking | None:
        """The parent run a search in `run_dir` logs into, if it logs to MLflow."""
        path = RunFolder(Path(run_dir)).tracking
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None

    def finish(self, run_dir: Path, summary: Mapping[str, Any]) -> None:
        """Log the search's results and files on the parent run and end it."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        best, trials = summary.get("best") or {}, summary.get("trials") or {}
        values = {
            **{f"test_{key}": best.get(f"test_{key}") for key in ("top1", "top5")},
            "best_val_accuracy": best.get("val_accuracy"),
            "wall_seconds": summary.get("wall_seconds"),
            **{f"trials_{state}": count for state, count in trials.items()},
        }
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, 0) for key, value in values.items() if _is_number(value)]
        client.log_batch(self.run_id, metrics=metrics)
        client.set_tag(self.run_id, "automl.best_trial", str(best.get("trial")))
        for path in RunFolder(Path(run_dir)).shared_artifacts:
            if path.is_dir():
                client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                client.log_artifact(self.run_id, str(path))
        client.set_terminated(self.run_id, "FINISHED")


def start_tracking(run_dir: Path, experiment: str, params: Mapping[str, Any], console: Console) -> Tracking | None:
    """The search's parent run (created, or the one a resumed search started), when MLflow is on; else None."""
    uri = os.environ.get(URI_VARIABLE)
    if not uri:
        return None
    try:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        console.print(
            f"[yellow]mlflow:[/yellow] {URI_VARIABLE} is set but mlflow is not installed: "
            "pip install 'automl\\[mlflow]' to log this search there"  # \\[ escapes rich markup
        )
        return None
    from mlflow.exceptions import MlflowException

    run_dir = Path(run_dir)
    try:
        tracking = _parent_run(
            MlflowClient(uri), uri, run_dir, experiment, [Param(k, str(v)) for k, v in _flatten(params).items()]
        )
    except MlflowException as exc:
        raise AutomlError(
            f"{URI_VARIABLE}={uri}: MLflow refused the search's run: {exc.message}",
            hint=f"fix or unset {URI_VARIABLE} (a local store: sqlite:///mlflow.db)",
        ) from exc
    console.print(f"[bold]mlflow[/bold] {uri}: experiment {experiment}, run {tracking.run_id}")
    return tracking


def _parent_run(client: MlflowClient, uri: str, run_dir: Path, experiment: str, params: list[Param]) -> Tracking:
    """The run a resumed search started, or a new one in the recipe's experiment (ids saved in the run folder)."""
    tracking = Tracking.of_run(run_dir)
    if tracking is not None:
        client.update_run(tracking.run_id, status="RUNNING")
        return tracking
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_dir.name, tags={"automl.run_dir": str(run_dir)})
    tracking = Tracking(uri, experiment, experiment_id, run.info.run_id)
    client.log_batch(tracking.run_id, params=params)
    write_atomic(RunFolder(run_dir).tracking, json.dumps(asdict(tracking)))
    return tracking


class TrialRuns(MLflowLoggerCallback):
    """Ray Tune's MLflow callback: one child run of `parent` per trial, epochs batched, the trial's end tagged."""

    def __init__(self, parent: Tracking) -> None:
        super().__init__(
            tracking_uri=parent.tracking_uri,
            experiment_name=parent.experiment_name,
            tags={PARENT_TAG: parent.run_id},
        )

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        final = bool(result.get("final"))
        step = int(result[TRAINING_ITERATION])
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"best_{key}" if final and key.startswith("val_") else key, float(value), now, step)
            for key, value in result.items()
            if key not in AUTO_RESULT_KEYS and key != "final" and _is_number(value)
        ]
        MlflowClient(self.tracking_uri).log_batch(self._trial_runs[trial], metrics=metrics)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        status = TrialStatus.FAILED if failed else ended_status(trial.last_result)
        MlflowClient(self.tracking_uri).set_tag(self._trial_runs[trial], "automl.status", status)
        super().log_trial_end(trial, failed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # value == value: not NaN


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"search": {"heads": [...]}}` -> `{"search.heads": "[...]"}`: MLflow parameters are flat strings."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
