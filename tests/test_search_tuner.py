"""The Tune experiment's budgets on a real local Ray (features are synthetic arrays, no photos).

The session's `local_ray` serves these tests. The features stand in for cached bottlenecks: the search code
runs as it does in production (OptunaSearch, ASHA/FIFO, reused actors, the real training loop). Failing and
killed trials are tested on real cached features in test_reliability_trials.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from tune_helpers import run_tune, tune_recipe

from automl.runs import RunFolder
from automl.search.budget import STOP_GRACE_S, SearchBudget
from automl.search.features import FeatureSet
from automl.search.tune_state import collect_trials

pytestmark = pytest.mark.slow

CLASSES = 4
WIDTH = 64


def _features(rows: int) -> FeatureSet:
    """Separable classes: a class's rows sit around its own centre."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(CLASSES, WIDTH)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, CLASSES, n).astype(np.int32)
        return centres[y] + rng.normal(size=(n, WIDTH)).astype(np.float32), y

    (x_train, y_train), (x_val, y_val) = split(rows), split(rows // 4)
    arrays = {FeatureSet.key("lite_a", "all"): {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}}
    return FeatureSet(arrays=arrays, num_classes=CLASSES)


def test_target_accuracy_stops_the_search_with_the_trial_that_reached_it(tmp_path, local_ray):
    recipe = tune_recipe(
        tmp_path, "{backbones: lite_a, epochs: 10, scheduler: fifo}", "{trials: 40, target_accuracy: 0.9}"
    )
    budget = SearchBudget(deadline=time.time() + 300, target_accuracy=0.9)
    trials = collect_trials(RunFolder(run_tune(tmp_path, recipe, _features(2000), budget))).to_frame()
    assert budget.target_reached
    assert len(trials) < 40, "the search stopped before its trial budget"
    reached = trials[(trials["status"] == "complete") & (trials["val_accuracy"] >= 0.9)]
    assert len(reached) >= 1 and reached["checkpoint"].map(lambda p: Path(p).is_file()).all()
    assert (reached["epochs"] < 10).any(), "the trial that reached the target stopped there, before its epochs"


def test_the_deadline_ends_the_search_and_trials_end_themselves_before_it(tmp_path, local_ray):
    recipe = tune_recipe(tmp_path, "{backbones: lite_a, epochs: 200, scheduler: asha}", "{trials: 500}")
    budget = SearchBudget(deadline=time.time() + 30, target_accuracy=None)
    started = time.time()
    trials = collect_trials(RunFolder(run_tune(tmp_path, recipe, _features(3000), budget))).to_frame()
    seconds = time.time() - started
    assert seconds < 30 + STOP_GRACE_S + 5, f"the search ran {seconds - 30:.0f} s past its 30 s deadline"
    assert 0 < len(trials) < 500
    assert (trials["status"] == "complete").any(), "trials running at the deadline ended themselves with weights"
