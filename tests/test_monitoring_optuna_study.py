"""The search's Optuna study in the run folder, on a real local Ray (features are synthetic arrays, no photos).

The Tune experiment runs as in production (the study-writing searcher, ASHA, reused actors, the real
training loop); the study is then read back from its journal file the way optuna-dashboard reads it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from tune_helpers import run_tune, tune_recipe

from automl.monitoring.optuna_study import journal_storage, study_path
from automl.runs import RunFolder
from automl.search import tune_state
from automl.search.budget import SearchBudget
from automl.search.features import FeatureSet
from automl.search.space import build_space
from automl.search.tuner import run_trials

pytestmark = pytest.mark.slow

CLASSES = 4
WIDTH = 32
STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


def collect_trials(run_dir: Path) -> pd.DataFrame:
    """The run's trials as one table (the typed records flattened), for comparisons with the study."""
    return tune_state.collect_trials(RunFolder(Path(run_dir))).to_frame()


def _features(rows: int, noise: float) -> FeatureSet:
    """Overlapping classes (accuracy well below 1), so trials differ and ASHA has something to prune."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLASSES, WIDTH)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, CLASSES, n).astype(np.int32)
        return centres[y] + rng.normal(scale=noise, size=(n, WIDTH)).astype(np.float32), y

    (x_train, y_train), (x_val, y_val) = split(rows), split(rows // 4)
    arrays = {FeatureSet.key("lite_a", "all"): {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}}
    return FeatureSet(arrays=arrays, num_classes=CLASSES)


def _study(run_dir, name: str) -> optuna.Study:
    """The study as another process (optuna-dashboard) reads it: a fresh storage over the journal file."""
    storage = journal_storage(study_path(run_dir))
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == [name], "one study per run"
    return optuna.load_study(study_name=name, storage=storage)


def test_the_study_holds_every_trial_with_its_true_end_and_each_epoch_once(tmp_path, local_ray):
    recipe = tune_recipe(
        tmp_path,
        "{backbones: lite_a, heads: softmax, optimizers: sgd, epochs: 6, scheduler: asha,"
        " learning_rate: {low: 1.0e-6, high: 0.3, log: true}}",
        "{trials: 10}",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run_tune(tmp_path, recipe, _features(800, noise=1.5))
    repeated = [str(w.message) for w in caught if "already reported" in str(w.message)]
    assert not repeated, f"epochs reached the study twice: {repeated[:3]}"

    trials = collect_trials(run_dir).set_index("trial_id")
    study = _study(run_dir, recipe.name)
    by_tune_id = {t.user_attrs["tune_trial"]: t for t in study.trials}
    assert set(by_tune_id) == set(trials.index), "the study holds exactly the search's trials"
    assert (trials["status"] == "pruned").any(), "ASHA pruned some trials (the test needs one)"
    for tune_id, row in trials.iterrows():
        frozen = by_tune_id[tune_id]
        assert frozen.state == STATES[row["status"]], (tune_id, row["status"], frozen.state)
        assert frozen.user_attrs["status"] == row["status"]
        assert frozen.params["learning_rate"] == pytest.approx(row["param_learning_rate"])
        assert frozen.user_attrs["label"].startswith("lite_a/all softmax sgd lr=")
        assert sorted(frozen.intermediate_values) == list(range(1, row["epochs"] + 1)), "one value per epoch"
        if row["status"] == "complete":
            assert frozen.value == pytest.approx(row["val_accuracy"]), "a finished trial's value is its best epoch's"
        else:
            assert row["epochs"] < 6, "a pruned trial stopped before its last epoch"
            last = frozen.intermediate_values[max(frozen.intermediate_values)]
            assert frozen.value in (None, pytest.approx(last)), "a pruned trial is not given a finished trial's value"


def _interrupt_after_first_complete_trial(run_dir, name: str) -> threading.Thread:
    """Interrupt the running search (Tune's SIGUSR1: as Ctrl-C) once the study has a finished trial."""

    def watch() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            path = study_path(run_dir)
            if path.is_file() and path.stat().st_size:
                try:
                    if any(t.state == TrialState.COMPLETE for t in _study(run_dir, name).trials):
                        os.kill(os.getpid(), signal.SIGUSR1)
                        return
                except (KeyError, AssertionError):  # the study is not created yet
                    pass
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_interrupted_search_resumes_in_the_same_study(tmp_path, local_ray):
    recipe = tune_recipe(tmp_path, "{backbones: lite_a, heads: softmax, epochs: 4, scheduler: fifo}", "{trials: 6}")
    features = _features(2000, noise=0.5)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    space = build_space(recipe.search, {"lite_a": ["all"]})
    watcher = _interrupt_after_first_complete_trial(run_dir, recipe.name)
    run_trials(
        recipe, space, features, run_dir, SearchBudget(deadline=time.time() + 600, target_accuracy=None), resume=False
    )
    watcher.join(timeout=5)
    before = {t.number: t for t in _study(run_dir, recipe.name).trials}
    # Tune lists pending trials too (all 6 on a fast machine): count the ones that finished
    finished = int((collect_trials(run_dir)["status"] == "complete").sum())
    assert 0 < finished < 6, "the search was interrupted before its trials were done"
    assert all(t.state.is_finished() for t in before.values()), "an interrupted search leaves no trial RUNNING"

    run_trials(
        recipe, space, features, run_dir, SearchBudget(deadline=time.time() + 600, target_accuracy=None), resume=True
    )

    after = _study(run_dir, recipe.name).trials
    trials = collect_trials(run_dir)
    assert len(trials) == 6 and {t.user_attrs["tune_trial"] for t in after} == set(trials["trial_id"])
    assert all(t.state.is_finished() for t in after), "nothing left RUNNING after the resumed search"
    for number, trial in before.items():
        assert after[number].state == trial.state and after[number].value == trial.value, "earlier ends are kept"
    complete = {t.user_attrs["tune_trial"] for t in after if t.state == TrialState.COMPLETE}
    assert complete == set(trials.loc[trials["status"] == "complete", "trial_id"]), "Optuna and Tune agree"
    reruns = [t for t in after if "rerun_of" in t.user_attrs]  # trials the interruption stopped, run again
    assert len(after) == len(trials) + len(reruns)
    for rerun in reruns:
        stopped = before[rerun.user_attrs["rerun_of"]]
        assert stopped.state == TrialState.PRUNED and stopped.params == rerun.params
        assert stopped.user_attrs["tune_trial"] == rerun.user_attrs["tune_trial"]
