"""`automl search` end to end on real photos: the driver SIGKILLed mid-search, resumed, exported, reloaded.

Two animals10 classes (30 photos each, the `cats_and_dogs` fixture), EfficientNet-Lite0 with its real
weights, cut `all`: small enough for about two minutes, real in every part (CLI, scan, cache, Ray, Tune,
export, evaluation).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automl.data.dataset import Dataset
from automl.recipe import load_recipe
from automl.runs import RunFolder, Summary, TrialStatus, TrialTable
from automl.search.tune_state import collect_trials

pytestmark = pytest.mark.slow

CLASSES = ("cat", "dog")
PER_CLASS = 30
TRIALS = 8


def _automl(*args: str) -> list[str]:
    return [sys.executable, "-m", "automl", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AUTOML_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _wait_for_complete_trials(runs: Path, count: int, process: subprocess.Popen, timeout: float) -> Path:
    """The run folder, once Tune's saved state counts `count` complete trials."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"the search ended early: {process.stderr.read().decode()[-2000:]}"
        for run in runs.glob("*/"):
            if len(collect_trials(RunFolder(run)).get([TrialStatus.COMPLETE])) >= count:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no {count} complete trials within {timeout} s")


def test_a_killed_driver_resumes_without_losing_or_rerunning_trials_then_exports(tmp_path, cats_and_dogs):
    recipe = tmp_path / "cats_and_dogs.yaml"
    recipe.write_text(
        f"data: {{folder: {cats_and_dogs}}}\n"
        "search: {backbones: efficientnet_lite0, cuts: all, heads: [softmax, svm], epochs: 4, scheduler: fifo}\n"
        f"budget: {{time: 5m, trials: {TRIALS}}}\n"
        f"output: {{folder: {tmp_path / 'runs'}}}\n"
    )
    env = _env(tmp_path)
    driver = subprocess.Popen(
        _automl("search", str(recipe), "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        run = _wait_for_complete_trials(tmp_path / "runs", 2, driver, timeout=240)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    moved = shutil.copytree(run, tmp_path / "moved" / run.name)
    refused = subprocess.run(_automl("search", str(recipe), "--resume", str(moved)), env=env, capture_output=True)
    assert refused.returncode == 2 and f"started in {run}" in refused.stderr.decode(), refused.stderr.decode()[-2000:]
    folder = RunFolder(run)
    finished = collect_trials(folder).get([TrialStatus.COMPLETE])
    saved = {trial.name: (folder.experiment / trial.name / "result.json").read_bytes() for trial in finished}
    assert len(saved) >= 2 and not folder.is_finished()
    # killed mid-search, the run folder still holds a model: the provisional one exported before the trials
    assert Summary.read(folder.summary).provisional and (folder.model / "model.keras").is_file()

    resumed = subprocess.run(
        _automl("search", str(recipe), "--resume", str(run), "--json"), env=env, capture_output=True, timeout=420
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    summary = json.loads(resumed.stdout.decode().strip().splitlines()[-1])

    # every trial of the budget ran, the ones finished before the kill were kept and not run again
    after = collect_trials(folder)
    assert len(after) == TRIALS and len({trial.trial_id for trial in after}) == TRIALS
    assert after.counts().complete == TRIALS
    for name, result_lines in saved.items():
        assert (folder.experiment / name / "result.json").read_bytes() == result_lines, f"{name} re-ran"
    assert summary["trials"]["done"] == TRIALS and summary["stop_reason"] == "trials"

    # the resumed search found every feature in the cache the first run built
    dataset = Dataset.from_recipe(load_recipe(recipe).data)
    photos = len(dataset.split("train")) + len(dataset.split("val"))  # a search extracts no test photo
    assert summary["cache"]["cache_misses"] == 0 and summary["cache"]["cache_hits"] >= photos - 2

    # the run folder: model, labels, metrics, trials table with the baseline, recipe; best ≥ baseline
    assert (folder.model / "model.keras").is_file() and json.loads(folder.labels.read_text()) == list(CLASSES)
    assert summary["best"]["val_accuracy"] >= summary["baseline"]["val_accuracy"]
    table = TrialTable.read(folder.trials)
    assert len(table) == TRIALS + 1 and sum(trial.baseline for trial in table) == 1
    assert all({"backbone", "cut", "head", "optimizer"} <= set(trial.params) and trial.history for trial in table)
    metrics = json.loads(folder.metrics.read_text())
    assert summary["best"]["test_top1"] == metrics["top1"] and metrics["top1"] >= 0.8

    status = subprocess.run(_automl("status", str(run), "--json"), env=env, capture_output=True, timeout=60)
    assert status.returncode == 0 and json.loads(status.stdout)["counts"]["complete"] == TRIALS, "baseline apart"

    # a fresh process reloads the exported model and reproduces metrics.json on the test photos
    check = subprocess.run([sys.executable, "-c", RELOAD, str(run)], env=env, capture_output=True, timeout=180)
    assert check.returncode == 0, check.stderr.decode()[-2000:]
    reproduced = json.loads(check.stdout.decode().strip().splitlines()[-1])
    assert reproduced == {"n": metrics["n"], "top1": pytest.approx(metrics["top1"])}


RELOAD = """
import json, sys
from pathlib import Path
from automl.data.dataset import Dataset
from automl.exported import ExportedModel
from automl.recipe import load_recipe

run = Path(sys.argv[1])
model = ExportedModel.load(run)
dataset = Dataset.from_recipe(load_recipe(run / "recipe.yaml").data)
test = dataset.split("test")
report = model.predict_files([r.path for r in test], top=1)
predicted = {str(r["file"]): r["labels"][0]["label"] for r in report.results}
hits = sum(predicted[str(r.path)] == dataset.classes[r.label] for r in test)
print(json.dumps({"n": len(test), "top1": hits / len(test)}))
"""


def test_a_budget_spent_on_features_still_exports_a_tested_model_without_any_trial(tmp_path, cats_and_dogs):
    """budget.time 80 s (60 s reserve): the extraction deadline has passed when Ray is up, so the uncached cheaper
    backbone is skipped, the cached one is loaded, no trial can start, and LR-CV on it is selected and exported
    (issue 15: "features took too long" is never an error when a model can be exported)."""
    env = _env(tmp_path)
    warm = tmp_path / "warm.yaml"
    warm.write_text(
        f"data: {{folder: {cats_and_dogs}}}\nsearch: {{backbones: efficientnet_lite0, weights: none, cuts: all}}\n"
    )
    assert subprocess.run(_automl("cache", "build", str(warm)), env=env, capture_output=True).returncode == 0
    recipe = tmp_path / "late.yaml"
    recipe.write_text(
        f"data: {{folder: {cats_and_dogs}}}\n"
        "search: {backbones: [efficientnet_lite0, mobilenet_v2], weights: none, cuts: all, heads: softmax}\n"
        "budget: {time: 80s}\n"
        f"output: {{folder: {tmp_path / 'runs'}}}\n"
    )
    search = subprocess.run(_automl("search", str(recipe), "--json"), env=env, capture_output=True, text=True)
    assert search.returncode == 0, search.stderr[-3000:]
    summary = Summary.model_validate_json(search.stdout)
    assert summary.stop_reason == "time" and summary.trials.done == 0 and summary.baseline is None
    assert summary.cache.backbones == {"mobilenet_v2": "skipped", "efficientnet_lite0": "done"}
    assert summary.best is not None and summary.best.trial == "lr-cv/efficientnet_lite0"
    assert not summary.provisional and summary.best.test_top1 is not None, "the final model, tested"
    assert "no trial ran" in search.stderr
    assert (Path(summary.run_dir) / "model" / "model.keras").is_file()


def test_near_duplicate_groups_share_a_fold_in_the_development_pool(cats_and_dogs) -> None:
    """With data.group_near_duplicates the search's folds follow the groups (as its splits and the audit do)."""
    import numpy as np

    from automl.recipe import parse_recipe
    from automl.search.driver import _development_pool
    from automl.search.features import FeatureSet

    recipe = parse_recipe(f"data: {{folder: {cats_and_dogs}}}\nsearch: {{folds: 5}}\n")
    plain = Dataset.from_recipe(recipe.data)
    pool = plain.split("train") + plain.split("val")
    sha1s = [record.sha1 for record in pool]
    group = {sha1: sha1s[0] for sha1 in sha1s[:4]}  # four photos of one class: one group of near-copies
    grouped = Dataset.from_recipe(recipe.data, groups=group)
    kept = [r for r in grouped.records if r.split != "test" and r.sha1 in set(sha1s)]
    arrays = {
        "x_train": np.zeros((len(kept), 4), dtype=np.float32),
        "x_val": np.zeros((0, 4), dtype=np.float32),
        "y_train": np.array([r.label for r in kept], dtype=np.int32),
        "y_val": np.zeros(0, dtype=np.int32),
    }
    features = FeatureSet(
        arrays={FeatureSet.key("lite", "all"): arrays},
        num_classes=2,
        sha1s={"train": [r.sha1 for r in kept], "val": []},
    )
    development = _development_pool(recipe, features, grouped)
    members = [i for i, r in enumerate(kept) if r.sha1 in group]
    assert len(members) > 1 and len({int(development.folds[i]) for i in members}) == 1, "one group, one fold"
    assert len(set(development.folds.tolist())) > 1, "the other photos still spread over the folds"


def test_the_first_models_lr_cv_is_reused_on_the_same_photos_and_refitted_on_others() -> None:
    """The first backbone's LR-CV is fitted once per search (for the first model), unless its pool changed."""
    import types

    import numpy as np
    from rich.console import Console

    from automl.search.driver import Development, _lr_cv
    from automl.search.features import FeatureSet

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20, dtype=np.int32)
    arrays = {
        "x_train": (rng.normal(size=(40, 4)) + y[:, None]).astype(np.float32),
        "x_val": np.zeros((0, 4), dtype=np.float32),
        "y_train": y,
        "y_val": np.zeros(0, dtype=np.int32),
    }
    sha1s = [f"{i:040x}" for i in range(40)]
    features = FeatureSet(
        arrays={FeatureSet.key("lite", "all"): arrays}, num_classes=2, sha1s={"train": sha1s, "val": []}
    )
    development = Development(y=y, folds=np.arange(40) % 5, k=5)
    sentinel = _lr_cv(development, features, Console(quiet=True))[0]  # the first model's, fitted before
    same = types.SimpleNamespace(candidate=sentinel, fitted_on=("lite", sha1s))
    assert _lr_cv(development, features, Console(quiet=True), same)[0] is sentinel  # type: ignore[arg-type]
    other = types.SimpleNamespace(candidate=sentinel, fitted_on=("lite", sha1s[:-1]))
    refitted = _lr_cv(development, features, Console(quiet=True), other)[0]  # type: ignore[arg-type]
    assert refitted is not sentinel and refitted.name == "lr-cv/lite"
