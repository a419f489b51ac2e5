"""automl.search.selection: LR-CV and trial candidates scored out of fold, the choice, the exported model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATASETS

from automl.backbones.registry import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import scan_dataset
from automl.search.selection import Choice, Pool, choose, lr_cv_candidate, selection_summary, trial_candidate
from automl.selection.folds import assign_folds

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1")


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Pool], np.ndarray, list]:
    """animals10, 24 photos a class, pooled vectors of Lite0 and Lite1 (the shared cache: computed once)."""
    dataset = scan_dataset(DATASETS / "animals10", train=0.7, val=0.15, test=0.15, seed=0, max_per_class=24)
    records = dataset.split("train") + dataset.split("val")
    cache = BottleneckCache()
    result = {}
    for name in BACKBONES:
        backbone = get_backbone(name)
        cache.ensure(backbone, "default", ["all"], records, progress=False)
        x = cache.load(backbone, "default", "all", [r.sha1 for r in records])
        result[name] = Pool(x, np.array([r.label for r in records]))
    folds = assign_folds([r.sha1 for r in records], [r.label for r in records], k=5, seed=0)
    return result, folds, records


def test_lr_cv_candidates_are_calibrated_out_of_fold_and_the_best_by_log_loss_is_chosen(pools) -> None:
    by_backbone, folds, _ = pools
    candidates = [lr_cv_candidate(name, pool, folds, 10) for name, pool in by_backbone.items()]
    y = by_backbone[BACKBONES[0]].y
    for candidate in candidates:
        assert candidate.oof_probabilities.shape == (len(y), 10)
        np.testing.assert_allclose(candidate.oof_probabilities.sum(axis=1), 1.0, atol=1e-9)
        scores = candidate.scores(y)
        assert scores["oof_accuracy"] > 0.8, scores  # ImageNet features separate these animals
        assert candidate.temperature.log_loss_after <= candidate.temperature.log_loss_before + 1e-9
    single = choose(candidates, y, 5, ensemble=False)
    assert not single.is_ensemble
    assert single.members[0][0].name == min(candidates, key=lambda c: c.scores(y)["oof_log_loss"]).name
    estimate = single.estimate()
    low, high = estimate["accuracy_ci95"]
    assert low < estimate["accuracy"] < high and estimate["n"] == len(y)
    summary = selection_summary(single)
    assert summary.chosen == single.name and [c.name for c in summary.candidates] == [c.name for c in single.candidates]


def test_an_ensemble_is_kept_only_when_it_beats_the_best_single_beyond_the_noise(pools) -> None:
    by_backbone, folds, _ = pools
    good = lr_cv_candidate(BACKBONES[0], by_backbone[BACKBONES[0]], folds, 10)
    y = by_backbone[BACKBONES[0]].y
    twin = Choice([good, good], np.array([0.5, 0.5]), y, 5).candidates[1]  # the same model twice: no gain
    assert not choose([good, twin], y, 5).is_ensemble
    rng = np.random.default_rng(0)
    noisy = [
        lr_cv_candidate(name, Pool(pool.x + rng.normal(0, 3.0, pool.x.shape).astype(np.float32), pool.y), folds, 10)
        for name, pool in by_backbone.items()
    ]
    chosen = choose(noisy, y, 5)
    assert chosen.comparison is not None
    if chosen.is_ensemble:  # kept: its OOF log-loss beats the best single one's and it is recalibrated
        assert chosen.comparison.difference < 0 and chosen.comparison.share_not_better <= 0.10
        assert chosen.estimate()["log_loss"] <= min(c.scores(y)["oof_log_loss"] for c in noisy) + 1e-9


def test_a_trial_is_cross_validated_with_its_own_configuration_and_no_fold_chooses_its_epoch(pools) -> None:
    from automl.train import TrialData, train_trial

    by_backbone, folds, _ = pools
    pool = by_backbone[BACKBONES[0]]
    config = {"backbone": BACKBONES[0], "cut": "all", "head": "svm", "svm_c": 1.0, "epochs": 4, "optimizer": "adam"}
    trained = train_trial(config, TrialData(pool.x, pool.y, pool.x[:20], pool.y[:20], 10))
    candidate = trial_candidate("svm-trial", trained, pool, folds, 10, deadline=float("inf"))
    assert candidate is not None and candidate.details["head"] == "svm"
    assert candidate.head.kernel.shape == (pool.x.shape[1], 10), "the fold heads averaged into one Dense layer"
    assert candidate.scores(pool.y)["oof_accuracy"] > 0.7
    assert trial_candidate("late", trained, pool, folds, 10, deadline=0.0) is None, "past the deadline: left out"


def test_the_latency_of_an_exported_ensemble_and_of_its_best_single_member_reach_summary_and_report(
    pools, tmp_path
) -> None:
    from automl.data.dataset import Dataset
    from automl.recipe import Recipe
    from automl.report.page import Run, selection_section
    from automl.runs.folder import RunFolder
    from automl.runs.records import Summary
    from automl.runs.trials import TrialTable
    from automl.search.export import export_choice, measure_latency

    by_backbone, folds, _ = pools
    y = by_backbone[BACKBONES[0]].y
    candidates = [lr_cv_candidate(name, pool, folds, 10) for name, pool in by_backbone.items()]
    ensemble = Choice(candidates, np.array([0.5, 0.5]), y, 5)
    recipe = Recipe.model_validate({"data": {"folder": str(DATASETS / "animals10"), "max_per_class": 24}})
    dataset = Dataset.from_recipe(recipe.data)
    backbones = {name: get_backbone(name) for name in BACKBONES}
    folder = RunFolder.create(tmp_path, "latency")
    export_choice(recipe, dataset, backbones, ensemble, folder, test=False)

    exported, single = measure_latency(recipe, dataset, backbones, ensemble, folder)
    assert single is not None and 0 < exported < 60_000 and 0 < single < 60_000
    summary = selection_summary(ensemble, (exported, single))
    assert (summary.latency_ms_p50, summary.single_latency_ms_p50) == (exported, single)
    page = selection_section(Run(folder, Summary(selection=summary), {}, TrialTable()))
    assert f"exported model on this machine: {exported:.0f} ms (p50)" in page
    assert f"best single candidate alone: {single:.0f} ms" in page

    alone = Choice(candidates[:1], np.ones(1), y, 5)
    export_choice(recipe, dataset, backbones, alone, folder, test=False)
    assert measure_latency(recipe, dataset, backbones, alone, folder)[1] is None, "no ensemble: nothing to compare"
