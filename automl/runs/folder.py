"""A run folder (`runs/<recipe>-<timestamp>/`): every path in it, and what makes a folder one.

```
recipe.yaml            the recipe, written first: a folder holding it is a run
summary.json           the search's summary (`automl.runs.records.Summary`), written last: the run is finished
trials.parquet         every trial and the baseline (`automl.runs.trials.TrialTable`)
labels.json  metrics.json (`TestMetrics`)  audit.json (`automl.audit`)  report.html
model/                 the exported model (automl.exported)
baseline.npz           the default configuration's TrialResult (reused on resume)
optuna.log             the Optuna study the sampler uses (JournalStorage: `optuna-dashboard optuna.log`)
extraction.json        each backbone's feature extraction: state, images/s, ETA (`automl.search.features`)
mlflow.json            the MLflow parent run's ids, when MLflow tracking is on (reused on resume)
tune/origin            the run folder's path when the search started (Tune's state keeps it)
tune/search/           Ray Tune: experiment state, one folder per trial (CSV, JSON, TensorBoard logs, and, for
                       finished trials, checkpoint_*/trial_result.npz with the weights); read only by
                       `automl.search.tune_state`
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from automl.errors import InputError

RECIPE_FILE = "recipe.yaml"
SUMMARY_FILE = "summary.json"
TRIALS_FILE = "trials.parquet"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
MODEL_DIR = "model"
BASELINE_FILE = "baseline.npz"
TUNE_DIR = "tune"
EXPERIMENT = "search"
RESULT_FILE = "trial_result.npz"
AUDIT_FILE = "audit.json"
STUDY_FILE = "optuna.log"
TRACKING_FILE = "mlflow.json"
EXTRACTION_FILE = "extraction.json"
"""The `TrialResult` inside each finished trial's checkpoint."""


class RunFolderError(InputError):
    """A file of a run folder this version cannot read (damaged, or written by a newer automl)."""


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def create(cls, output_folder: str | os.PathLike[str], name: str) -> RunFolder:
        """A new, empty `<output_folder>/<name>-<timestamp>/` (refused if it exists)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path(output_folder).expanduser() / f"{name}-{stamp}"
        root.mkdir(parents=True, exist_ok=False)
        return cls(root.resolve())

    def is_run(self) -> bool:
        """A search wrote this folder: it holds the recipe (written before anything else)."""
        return self.recipe.is_file()

    def is_finished(self) -> bool:
        """The search ended and exported its final model: summary.json is written last, and says
        `provisional` while a running search keeps its best model so far in the folder."""
        from automl.runs.records import Summary

        return self.summary.is_file() and not Summary.read(self.summary).provisional

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def trials(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def labels(self) -> Path:
        return self.root / LABELS_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def baseline(self) -> Path:
        return self.root / BASELINE_FILE

    @property
    def audit(self) -> Path:
        return self.root / AUDIT_FILE

    @property
    def study(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def tracking(self) -> Path:
        return self.root / TRACKING_FILE

    @property
    def extraction(self) -> Path:
        return self.root / EXTRACTION_FILE

    @property
    def shared_artifacts(self) -> tuple[Path, ...]:
        """What a search leaves for people to look at (logged to MLflow, for one)."""
        return (self.model, self.report, self.metrics, self.summary, self.trials, self.recipe, self.study)

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

    @property
    def experiment(self) -> Path:
        return self.tune / EXPERIMENT

    @property
    def origin(self) -> Path:
        return self.tune / "origin"


def latest(output_folder: str | os.PathLike[str], name: str, *, with_model: bool = False) -> RunFolder | None:
    """The newest run of recipe `name` under `output_folder` (with an exported model, if asked), else None."""
    runs = [RunFolder(path) for path in Path(output_folder).expanduser().glob(f"{name}-*") if path.is_dir()]
    runs = [run for run in runs if run.is_run() and (not with_model or run.model.is_dir())]
    return max(runs, key=lambda run: run.root.stat().st_mtime, default=None)
