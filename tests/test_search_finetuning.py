"""The search's fine-tuning stage on real animals10 photos: EfficientNet-Lite0, cut `top`, LR-CV as the probe.

Everything is real (photos, weights, cache, LR-CV, fine-tuning, export) but Ray and Tune: the stage runs after
the selection, on the selection's candidates, so the tests build those directly (the driver's own phases).
Two epochs keep a fine-tuning run to seconds; `finetuning.EPOCHS` and `finetuning.MARGIN_PHOTOS` are the
module's test seams (monkeypatched, never edited): the second forces LP-FT to win or lose the comparison.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from automl.recipe import Recipe
from automl.search import finetuning
from automl.search.budget import SearchBudget
from automl.search.finetuning import HELD_OUT_FOLD, finetune_stage

PER_CLASS = 12
FOLDS = 3


@pytest.fixture(scope="module")
def selected(animals10: Path, tmp_path_factory: pytest.TempPathFactory):
    """The recipe, dataset, backbones, features, development pool and LR-CV choice the stage starts from."""
    from automl.backbones.registry import get_backbone
    from automl.data.dataset import Dataset
    from automl.search.driver import _development_pool, _lr_cv
    from automl.search.features import FeaturePlan, prepare_features
    from automl.search.selection import choose

    cache = tmp_path_factory.mktemp("cache")
    recipe = Recipe.model_validate(
        {
            "data": {"folder": str(animals10), "max_per_class": PER_CLASS},
            "search": {"cuts": ["all", "top"], "folds": FOLDS},
            "cache": str(cache),
        }
    )
    dataset = Dataset.from_recipe(recipe.data)
    backbones = {"efficientnet_lite0": get_backbone("efficientnet_lite0")}
    plan = FeaturePlan.for_search(recipe.search, {n: list(b.cut_points()) for n, b in backbones.items()})
    features, _ = prepare_features(dataset, backbones, plan, "default", str(cache), progress=False)
    development = _development_pool(recipe, features, dataset)
    candidates = _lr_cv(development, features, Console(quiet=True))
    choice = choose(candidates, development.y, development.k, ensemble=False)
    return recipe, dataset, backbones, features, development, choice


def _budget(finetune_seconds: float) -> SearchBudget:
    return SearchBudget(
        deadline=time.time(), target_accuracy=None, seconds=600.0, reserve=60.0, finetune=finetune_seconds
    )


def _run(selected, finetune_seconds: float = 300.0):
    from automl.search.features import FeaturePlan

    recipe, dataset, backbones, features, development, choice = selected
    plan = FeaturePlan.for_search(recipe.search, {n: list(b.cut_points()) for n, b in backbones.items()})
    budget = _budget(finetune_seconds)
    return finetune_stage(
        recipe, dataset, backbones, features, development, choice, budget, Console(quiet=True), plan.stage
    )


def test_the_stage_compares_probe_and_fine_tuning_on_the_same_held_out_fold(selected, monkeypatch, tmp_path) -> None:
    from automl.report.page import Run, finetune_section
    from automl.runs.folder import RunFolder
    from automl.runs.records import Summary
    from automl.runs.trials import TrialTable

    monkeypatch.setattr(finetuning, "EPOCHS", 2)
    monkeypatch.setattr(finetuning, "MARGIN_PHOTOS", 10**6)  # the probe keeps the export
    _, _, _, _, development, choice = selected
    outcome = _run(selected)
    summary = outcome.summary
    held_out = development.folds == HELD_OUT_FOLD
    probe = next(c for c in choice.candidates if c.details.get("head") == "logistic")
    expected_lp = float(np.mean(probe.oof_probabilities[held_out].argmax(1) == development.y[held_out]))
    assert summary.skipped is None and (summary.backbone, summary.cut) == ("efficientnet_lite0", "top")
    assert summary.held_out == int(held_out.sum()) > 0
    assert summary.lp_accuracy == pytest.approx(expected_lp)
    chosen = float(np.mean(choice.oof_probabilities[held_out].argmax(1) == development.y[held_out]))
    assert summary.chosen_accuracy == pytest.approx(chosen)
    assert summary.ft_accuracy is not None and 0 < summary.ft_accuracy <= 1
    assert summary.epochs == 2 and summary.augment and summary.seconds > 0
    assert not summary.exported and outcome.choice is choice

    page = finetune_section(Run(RunFolder(tmp_path), Summary(finetune=summary), {}, TrialTable()))
    assert f"{100 * summary.lp_accuracy:.1f}" in page and f"{100 * summary.ft_accuracy:.1f}" in page
    assert f"{summary.held_out} photos" in page and "neither LP-FT nor the blend got more than one photo" in page
    assert summary.blend_accuracy is not None and f"{100 * summary.blend_accuracy:.1f}" in page


def test_a_winning_fine_tuned_model_is_exported_and_predicts(selected, monkeypatch, tmp_path) -> None:
    from automl.exported import ExportedModel
    from automl.runs.folder import RunFolder
    from automl.search.export import export_choice

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    monkeypatch.setattr(finetuning, "MARGIN_PHOTOS", -(10**6))  # LP-FT wins whatever the photos say
    recipe, dataset, backbones, _, development, chosen = selected
    outcome = _run(selected)
    assert outcome.summary.exported and outcome.summary.refit  # 300 s are plenty for a refit of one epoch
    members = outcome.choice.members
    (finetuned, *_), weights = zip(*[(m, w) for m, w in members if m.details.get("finetune")], strict=True)
    assert finetuned.cut == "top" and len(weights) == 1
    if outcome.summary.blended:  # LP-FT + the chosen model did better on the fold than LP-FT alone
        assert weights[0] == 0.5 and len(members) > 1 and not finetuned.details["tta"]
    else:
        assert len(members) == 1 and weights[0] == 1.0 and finetuned.details["tta"] == outcome.summary.tta
    held_out = development.folds == HELD_OUT_FOLD
    assert len(outcome.choice.y) == int(held_out.sum()) and outcome.choice.estimate()["folds"] == 1

    # the blend, whatever the fold said: half the chosen model's members, half LP-FT, one Keras model
    blend = finetuning._Blend(chosen, held_out, finetuned.oof_probabilities, development.y[held_out])
    blended = blend.with_member(finetuned)
    assert {c.name: w for c, w in blended.members}[finetuned.name] == 0.5
    np.testing.assert_allclose(sum(w for _, w in blended.members), 1.0)
    for name, choice in (("ft", outcome.choice), ("blend", blended)):
        folder = RunFolder.create(tmp_path, name)
        export_choice(recipe, dataset, backbones, choice, folder, test=False)
        model = ExportedModel.load(folder.model)
        photos = [record.path for record in dataset.split("test")[:4]]
        chunks = list(model.predict_chunks(photos))
        probabilities = np.concatenate([np.asarray(chunk.probabilities) for chunk in chunks])
        assert not [error for chunk in chunks for error in chunk.errors]
        assert probabilities.shape == (len(photos), len(dataset.classes))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_the_stage_extracts_its_planned_entries_once_and_a_second_stage_computes_no_flip_again(
    selected, monkeypatch
) -> None:
    from automl.cache import BottleneckCache
    from automl.search.features import FeaturePlan

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    recipe, dataset, backbones, *_ = selected
    backbone = backbones["efficientnet_lite0"]
    stage = FeaturePlan.for_search(recipe.search, {backbone.name: list(backbone.cut_points())}).stage[backbone.name]
    assert stage.entries() == [("top", "orig"), ("top", "hflip")]
    cache = BottleneckCache(str(recipe.cache))
    pool = [record for split in ("train", "val") for record in dataset.split(split)]
    missing = cache.missing(backbone, "default", [], pool, entries=stage.entries())
    first = _run(selected)
    assert first.summary.extracted == missing
    assert cache.missing(backbone, "default", [], pool, entries=stage.entries()) == 0
    assert _run(selected).summary.extracted == 0, "a second stage over the same photos reads its views back"


def test_the_stage_is_skipped_cleanly_when_its_share_is_too_small_or_it_is_off(selected) -> None:
    outcome = _run(selected, finetune_seconds=finetuning.MIN_FINETUNE_S - 1)
    assert outcome.choice is selected[-1]
    assert not outcome.summary.exported and outcome.summary.lp_accuracy is None
    assert outcome.summary.skipped is not None and "less than" in outcome.summary.skipped

    recipe, *rest = selected
    off = recipe.model_copy(update={"search": recipe.search.model_copy(update={"finetune": False})})
    outcome = _run((off, *rest))
    assert outcome.choice is selected[-1] and outcome.summary.skipped == "search.finetune is off"

    recipe, dataset, backbones, features, development, choice = selected
    folds = development.folds.copy()
    folds[development.y == 0] = HELD_OUT_FOLD  # class 0 held out entirely: the probe could not learn it
    lonely = dataclasses.replace(development, folds=folds)
    outcome = _run((recipe, dataset, backbones, features, lonely, choice))
    assert outcome.choice is choice and "classes [0] have no photo outside held-out fold" in outcome.summary.skipped


def test_the_budget_gives_the_stage_its_share_and_tune_only_cut_all() -> None:
    from automl.search.space import build_space

    cut_points = {"efficientnet_lite0": ["all", "top", "half", "none"]}

    def recipe(**search) -> Recipe:
        return Recipe.model_validate({"data": {"folder": "x"}, "search": search, "budget": {"time": "10m"}})

    on = recipe(cuts=["all", "top"], finetune_share=0.25)
    budget = SearchBudget.start(on, 1000.0)
    assert budget.finetune == 150.0 and budget.deadline == pytest.approx(1000.0 + 600 - budget.reserve - 150)
    assert build_space(on.search, cut_points).cuts_by_backbone == {"efficientnet_lite0": ("all",)}

    off = recipe(cuts=["all", "top"], finetune=False)
    assert SearchBudget.start(off, 1000.0).finetune == 0.0
    assert build_space(off.search, cut_points).cuts_by_backbone == {"efficientnet_lite0": ("all", "top")}
    nothing_to_tune = recipe(cuts=["all"])  # the default cuts: the stage has no cut, the trials keep their time
    assert SearchBudget.start(nothing_to_tune, 1000.0).finetune == 0.0
    only_top = recipe(cuts=["top"])  # Tune still has cut `all`: the frozen selection needs its trials
    assert build_space(only_top.search, cut_points).cuts_by_backbone == {"efficientnet_lite0": ("all",)}
    with pytest.raises(ValueError, match="finetune_share"):
        recipe(cuts=["all", "top"], finetune_share=0.7)


@pytest.mark.slow
def test_a_search_whose_fine_tuned_model_wins_exports_it_and_audits_with_the_selections_predictions(
    tmp_path, cats_and_dogs, monkeypatch
) -> None:
    """The whole search, in process, LP-FT forced to win: before the fix the audit zipped every pool photo with
    the fine-tuned model's fold-0 predictions and the search failed after exporting (natural_images, 10 min)."""
    import io
    import json

    from automl.data.dataset import Dataset
    from automl.recipe import parse_recipe
    from automl.runs.folder import RunFolder
    from automl.search.driver import run_search

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    monkeypatch.setattr(finetuning, "MARGIN_PHOTOS", -(10**6))
    recipe = parse_recipe(
        f"data: {{folder: {cats_and_dogs}}}\n"
        "search: {backbones: efficientnet_lite0, cuts: [all, top], heads: softmax, epochs: 3, scheduler: fifo,"
        " finetune_share: 0.5}\n"
        "budget: {time: 4m, trials: 2}\n"
        f"output: {{folder: {tmp_path / 'runs'}}}\n"
        f"cache: {tmp_path / 'cache'}\n",
        source="finetune.yaml",
    )
    outcome = run_search(recipe, console=Console(file=io.StringIO()))
    finetune = outcome.summary.finetune
    assert finetune is not None and finetune.exported and finetune.skipped is None
    best = outcome.summary.best
    assert best is not None and "lp-ft/efficientnet_lite0/top" in best.trial, "LP-FT alone, or blended with the chosen"
    assert best.trial.startswith("ensemble(") == finetune.blended
    folder = RunFolder(outcome.run_dir)
    audit = json.loads(folder.audit.read_text())
    dataset = Dataset.from_recipe(recipe.data)
    pool = len(dataset.split("train")) + len(dataset.split("val"))
    assert audit["model"]["judged"] == pool, "every pool photo judged by the selection's out-of-fold predictions"
    assert "LP-FT" in folder.report.read_text()


def test_without_a_time_budget_the_stage_runs_bounded_by_its_epochs(selected, monkeypatch) -> None:
    from automl.search.features import FeaturePlan

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    recipe, dataset, backbones, features, development, choice = selected
    plan = FeaturePlan.for_search(recipe.search, {n: list(b.cut_points()) for n, b in backbones.items()})
    unlimited = SearchBudget(deadline=float("inf"), target_accuracy=None)  # budget.time: null (no share carved)
    assert unlimited.finetune == 0.0 and unlimited.finetune_deadline() == float("inf")
    outcome = finetune_stage(
        recipe, dataset, backbones, features, development, choice, unlimited, Console(quiet=True), plan.stage
    )
    assert outcome.summary.skipped is None and outcome.summary.epochs == 1
