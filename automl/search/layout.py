"""Where a search keeps things in its run folder (`runs/<recipe>-<timestamp>/`); light to import.

```
recipe.yaml  summary.json  trials.parquet  labels.json  metrics.json  report.html
model/                 the exported model (automl.exported)
baseline.npz           the default configuration's TrialResult (reused on resume)
tune/origin            the run folder's path when the search started (Tune's state keeps it)
tune/search/           Ray Tune: experiment state, one folder per trial (CSV, JSON, TensorBoard logs,
                       and, for finished trials, checkpoint_*/trial_result.npz with the weights)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METRIC = "val_accuracy"
"""What the search maximises: the best epoch's accuracy on the validation split."""
RESULT_FILE = "trial_result.npz"
"""The `TrialResult` inside each finished trial's checkpoint."""
EXPERIMENT = "search"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def experiment(self) -> Path:
        return self.tune / EXPERIMENT

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def trials(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def baseline(self) -> Path:
        return self.root / "baseline.npz"

    @property
    def origin(self) -> Path:
        return self.tune / "origin"
