"""The Tune experiment on a real local Ray: budgets and faults (features are synthetic arrays, no photos).

One Ray session serves the module. The features stand in for cached bottlenecks: the search code runs
as it does in production (OptunaSearch, ASHA/FIFO, reused actors, the real training loop).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from automl.recipe import parse_recipe
from automl.search.features import FeatureSet
from automl.search.leaderboard import collect_trials
from automl.search.runner import STOP_GRACE_S, SearchBudget, run_trials
from automl.search.space import build_space

pytestmark = pytest.mark.slow

CLASSES = 4
WIDTH = 64


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from automl.search.cluster import connect

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    session = connect(None)
    yield session
    ray.shutdown()


def _features(rows: int, *, backbones: tuple[str, ...] = ("lite_a",), broken: str | None = None) -> FeatureSet:
    """Separable classes (a class's rows sit around its own centre); `broken` gets val rows of another width."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(CLASSES, WIDTH)).astype(np.float32)

    def split(n: int, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, CLASSES, n).astype(np.int32)
        x = centres[y] + rng.normal(size=(n, WIDTH)).astype(np.float32)
        return x[:, :width], y

    arrays = {}
    for name in backbones:
        x_train, y_train = split(rows)
        x_val, y_val = split(rows // 4, WIDTH // 2 if name == broken else WIDTH)
        arrays[FeatureSet.key(name, "all")] = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    return FeatureSet(arrays=arrays, num_classes=CLASSES)


def _recipe(tmp_path: Path, search: str, budget: str):
    return parse_recipe(f"data: {{folder: x}}\nsearch: {search}\nbudget: {budget}\noutput: {{folder: {tmp_path}}}\n")


def _run(tmp_path, recipe, features, budget):
    space = build_space(recipe.search, {name.split("/")[0]: ["all"] for name in features.arrays})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = time.time()
    run_trials(recipe, space, features, run_dir, budget, resume=False)
    return collect_trials(run_dir), time.time() - started


def test_failing_trials_are_recorded_with_their_error_and_the_search_goes_on(tmp_path, local_ray):
    """A trial that raises is retried once, then recorded failed with its error; the other trials finish.

    The SIGKILLed-worker case lives in test_reliability_trials.py, whose victim trial is long enough for the
    killer to find it running every time.
    """
    recipe = _recipe(
        tmp_path,
        "{backbones: [lite_a, lite_b], heads: softmax, optimizers: adam, epochs: 6, scheduler: fifo, "
        "sampler: random, seed: 4}",
        "{trials: 3}",
    )
    features = _features(4000, backbones=("lite_a", "lite_b"), broken="lite_b")
    trials, _ = _run(tmp_path, recipe, features, SearchBudget(deadline=time.time() + 300, target_accuracy=None))

    assert len(trials) == 3
    failed = trials[trials["status"] == "failed"]
    assert set(failed["param_backbone"]) == {"lite_b"}, "only the trials on broken features fail"
    assert failed["error"].str.contains("x_val").all(), failed["error"].tolist()
    assert (failed["failures"] == 2).all(), "each raising trial was retried once (FailureConfig), then marked failed"
    survivors = trials[trials["param_backbone"] == "lite_a"]
    assert len(survivors) > 0 and (survivors["status"] == "complete").all()
    assert survivors["val_accuracy"].min() > 0.9


def test_target_accuracy_stops_the_search_with_the_trial_that_reached_it(tmp_path, local_ray):
    recipe = _recipe(tmp_path, "{backbones: lite_a, epochs: 10, scheduler: fifo}", "{trials: 40, target_accuracy: 0.9}")
    budget = SearchBudget(deadline=time.time() + 300, target_accuracy=0.9)
    trials, _ = _run(tmp_path, recipe, _features(2000), budget)
    assert budget.target_reached
    assert len(trials) < 40, "the search stopped before its trial budget"
    reached = trials[(trials["status"] == "complete") & (trials["val_accuracy"] >= 0.9)]
    assert len(reached) >= 1 and reached["checkpoint"].map(lambda p: Path(p).is_file()).all()
    assert (reached["epochs"] < 10).any(), "the trial that reached the target stopped there, before its epochs"


def test_the_deadline_ends_the_search_and_trials_end_themselves_before_it(tmp_path, local_ray):
    recipe = _recipe(tmp_path, "{backbones: lite_a, epochs: 200, scheduler: asha}", "{trials: 500}")
    budget = SearchBudget(deadline=time.time() + 30, target_accuracy=None)
    trials, seconds = _run(tmp_path, recipe, _features(3000), budget)
    assert seconds < 30 + STOP_GRACE_S + 5, f"the search ran {seconds - 30:.0f} s past its 30 s deadline"
    assert 0 < len(trials) < 500
    assert (trials["status"] == "complete").any(), "trials running at the deadline ended themselves with weights"
