"""The search's fine-tuning stage on real animals10 photos: EfficientNet-Lite0 and -Lite1, cut `top`, LR-CV as the
probes.

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

from automl.metrics import log_loss
from automl.recipe import Recipe
from automl.search import finetuning
from automl.search.budget import SearchBudget
from automl.search.finetuning import HELD_OUT_FOLD, finetune_stage

PER_CLASS = 12
FOLDS = 3
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1")


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
            "search": {"backbones": list(BACKBONES), "cuts": ["all", "top"], "folds": FOLDS},
            "cache": str(cache),
        }
    )
    dataset = Dataset.from_recipe(recipe.data)
    backbones = {name: get_backbone(name) for name in BACKBONES}
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


def test_the_stage_compares_probes_fine_tuning_and_blends_on_the_same_held_out_fold(
    selected, monkeypatch, tmp_path
) -> None:
    from automl.report.page import Run, finetune_section
    from automl.runs.folder import RunFolder
    from automl.runs.records import Summary
    from automl.runs.trials import TrialTable

    monkeypatch.setattr(finetuning, "EPOCHS", 2)
    monkeypatch.setattr(finetuning, "MARGIN_PHOTOS", 10**6)  # the chosen model keeps the export
    _, _, _, _, development, choice = selected
    outcome = _run(selected)
    summary = outcome.summary
    held_out = development.folds == HELD_OUT_FOLD
    y_out = development.y[held_out]
    probes = {c.backbone: c for c in choice.candidates if c.details.get("head") == "logistic"}
    ranked = sorted(probes, key=lambda name: log_loss(development.y, probes[name].oof_probabilities))
    assert summary.skipped is None and summary.stopped is None
    assert [(ft.backbone, ft.cut) for ft in summary.backbones] == [(name, "top") for name in ranked]
    for ft in summary.backbones:
        expected_lp = float(np.mean(probes[ft.backbone].oof_probabilities[held_out].argmax(1) == y_out))
        assert ft.lp_accuracy == pytest.approx(expected_lp)
        assert 0 < ft.ft_accuracy <= 1 and ft.epochs == 2 and ft.seconds > 0 and not ft.exported
    assert summary.held_out == int(held_out.sum()) > 0
    chosen = float(np.mean(choice.oof_probabilities[held_out].argmax(1) == y_out))
    assert summary.chosen_accuracy == pytest.approx(chosen)
    names = [c.name for c in summary.contenders]
    assert names == [
        finetuning.CHOSEN,
        *(f"{finetuning.ALONE} {name}" for name in ranked),
        finetuning.AVERAGED,
        finetuning.BLENDED,
    ]
    assert summary.augment and summary.seconds > 0
    assert summary.exported is None and outcome.choice is choice

    page = finetune_section(Run(RunFolder(tmp_path), Summary(finetune=summary), {}, TrialTable()))
    for ft in summary.backbones:
        assert f"{100 * ft.lp_accuracy:.1f}" in page and f"{100 * ft.ft_accuracy:.1f}" in page
    assert all(name in page for name in names) and f"{summary.held_out} photos" in page
    assert "no contender cleared it and every probe" in page


@pytest.mark.parametrize("form", ["alone", finetuning.AVERAGED, finetuning.BLENDED])
def test_a_winning_contender_is_exported_in_the_form_it_was_judged_and_predicts(
    selected, monkeypatch, tmp_path, form
) -> None:
    from automl.exported import ExportedModel
    from automl.runs.folder import RunFolder
    from automl.search.export import export_choice
    from automl.search.selection import Choice, assemble_choice

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    monkeypatch.setattr(finetuning, "MARGIN_PHOTOS", -(10**6))  # every contender clears the bar
    forced = f"{finetuning.ALONE} {BACKBONES[1]}" if form == "alone" else form
    monkeypatch.setattr(finetuning._Contest, "winner", lambda self: forced)
    recipe, dataset, backbones, features, development, single = selected
    # the chosen model as a recalibrated ensemble, as the selection exports it: the blend must flatten it right
    chosen = Choice(single.candidates, np.array([0.6, 0.4]), single.y, single.folds, blend_temperature=0.8)
    outcome = _run((recipe, dataset, backbones, features, development, chosen))
    summary = outcome.summary
    assert summary.exported == forced
    for ft in summary.backbones:
        exported = form != "alone" or ft.backbone == BACKBONES[1]
        assert (ft.exported, ft.refit) == (exported, exported)  # 300 s are plenty for refits of one epoch
    held_out = development.folds == HELD_OUT_FOLD
    choice = outcome.choice
    assert len(choice.y) == int(held_out.sum()) and choice.estimate()["folds"] == 1
    # the exported form is the judged one: its estimate on the fold is the contender's score
    judged = next(c for c in summary.contenders if c.name == forced)
    assert choice.estimate()["accuracy"] == pytest.approx(judged.accuracy)
    assert choice.estimate()["log_loss"] == pytest.approx(judged.log_loss)
    finetuned = {c.backbone: w for c, w in choice.members if c.details.get("finetune")}
    if form == "alone":
        assert finetuned == {BACKBONES[1]: 1.0} and len(choice.members) == 1
    elif form == finetuning.AVERAGED:
        assert finetuned == {name: 0.5 for name in BACKBONES} and len(choice.members) == 2
    else:  # half the chosen model's members, half the LP-FT models
        assert finetuned == {name: 0.25 for name in BACKBONES}
        assert len(choice.members) == len(chosen.members) + 2
    np.testing.assert_allclose(sum(w for _, w in choice.members), 1.0)

    folder = RunFolder.create(tmp_path, "export")
    export_choice(recipe, dataset, backbones, choice, folder, test=False)
    model = ExportedModel.load(folder.model)
    photos = [record.path for record in dataset.split("test")[:4]]
    chunks = list(model.predict_chunks(photos))
    probabilities = np.concatenate([np.asarray(chunk.probabilities) for chunk in chunks])
    assert not [error for chunk in chunks for error in chunk.errors]
    assert probabilities.shape == (len(photos), len(dataset.classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)

    # whatever the fold said about flips: with them, the blend temperature comes after the flip average
    flipped = [dataclasses.replace(c, details={**c.details, "tta": True}) for c in choice.candidates]
    with_flips = dataclasses.replace(choice, candidates=flipped)
    names = [layer.name for layer in assemble_choice(with_flips, backbones, "default", dataset.classes)[0].layers]
    assert "flip_average" in names
    assert ("flip_average_temperature" in names) == (choice.blend_temperature != 1.0)


def test_the_stage_extracts_its_planned_entries_once_and_a_second_stage_computes_no_flip_again(
    selected, monkeypatch, tmp_path
) -> None:
    from automl.cache import BottleneckCache
    from automl.search.features import FeaturePlan

    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    recipe, dataset, backbones, *rest = selected
    fresh = recipe.model_copy(update={"cache": str(tmp_path / "cache")})  # no stage entries in it yet
    plan = FeaturePlan.for_search(recipe.search, {n: list(b.cut_points()) for n, b in backbones.items()})
    cache = BottleneckCache(str(fresh.cache))
    pool = [record for split in ("train", "val") for record in dataset.split(split)]

    def missing() -> dict[str, int]:
        return {n: cache.missing(b, "default", [], pool, entries=plan.stage[n].entries()) for n, b in backbones.items()}

    assert all(plan.stage[name].entries() == [("top", "orig"), ("top", "hflip")] for name in backbones)
    first = _run((fresh, dataset, backbones, *rest))
    assert {ft.backbone: ft.extracted for ft in first.summary.backbones} == dict.fromkeys(backbones, len(pool))
    assert first.summary.extracted == len(backbones) * len(pool)
    assert missing() == dict.fromkeys(backbones, 0)
    second = _run((fresh, dataset, backbones, *rest))
    assert second.summary.extracted == 0, "a second stage over the same photos reads its views back"


def test_the_stage_is_skipped_cleanly_when_too_little_time_is_left_or_it_is_off(selected) -> None:
    outcome = _run(selected, finetune_seconds=0.0)  # trials ran to their deadline: half the 60 s reserve is left
    assert outcome.choice is selected[-1]
    assert outcome.summary.exported is None and outcome.summary.backbones == []
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
    # trials and selection ran past their deadline: the stage's share from now, never past half the reserve
    assert budget.finetune_deadline() == pytest.approx(budget.deadline + 150 + budget.reserve / 2)
    now = time.time()  # the trials ended early (a trials budget): their time left is the stage's too, no reserve
    early = SearchBudget(deadline=now + 200, target_accuracy=None, seconds=600.0, reserve=90.0, finetune=150.0)
    assert early.finetune_deadline() == pytest.approx(now + 200 + 150)
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
    assert finetune is not None and finetune.exported is not None and finetune.skipped is None
    best = outcome.summary.best
    assert best is not None and "lp-ft/efficientnet_lite0/top" in best.trial, "LP-FT alone, or blended with the chosen"
    assert best.trial.startswith("ensemble(") == (finetune.exported == finetuning.BLENDED)
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
    assert outcome.summary.skipped is None and [ft.epochs for ft in outcome.summary.backbones] == [1, 1]


def test_a_summary_of_the_one_backbone_stage_reads_as_one_entry() -> None:
    """summary.json before the stage fine-tuned several backbones: flat keys for its one backbone."""
    from automl.runs.records import FinetuneSummary

    old = {
        "backbone": "efficientnet_lite0", "cut": "top", "lp_accuracy": 0.85, "chosen_accuracy": 0.89,
        "ft_accuracy": 0.88, "held_out": 395, "extracted": 4270, "epochs": 8, "augment": True, "seconds": 46.0,
        "exported": True, "refit": True, "tta": False, "blend_accuracy": 0.9, "blended": True, "skipped": None,
    }  # fmt: skip
    summary = FinetuneSummary.model_validate(old)
    (one,) = summary.backbones
    assert (one.backbone, one.cut, one.lp_accuracy, one.ft_accuracy, one.epochs, one.refit, one.exported) == (
        "efficientnet_lite0",
        "top",
        0.85,
        0.88,
        8,
        True,
        True,
    )
    assert summary.exported == finetuning.BLENDED and summary.extracted == 4270 and summary.seconds == 46.0
    assert one.seconds == 0.0, "the old seconds timed the whole stage, not the backbone's training"
    assert [(c.name, c.accuracy) for c in summary.contenders] == [
        (finetuning.CHOSEN, 0.89),
        (f"{finetuning.ALONE} efficientnet_lite0", 0.88),
        (finetuning.BLENDED, 0.9),
    ]
    assert FinetuneSummary.model_validate_json(summary.to_json()) == summary


def test_a_further_backbone_starts_only_when_its_run_and_the_pending_refits_fit() -> None:
    """`_no_time_for` paces the next backbone by the last run, scaled by input pixels, plus every refit pending."""
    from types import SimpleNamespace

    from automl.backbones.registry import get_backbone

    lite0, lite2 = get_backbone("efficientnet_lite0"), get_backbone("efficientnet_lite2")
    last = SimpleNamespace(backbone=lite2, fold_seconds=50.0, refit_seconds=62.5)  # a fold run done, k = 5
    pace = 50.0 * (lite0.input_size / lite2.input_size) ** 2
    needed = pace * (1 + 5 / 4) + 62.5
    now = time.time()
    assert finetuning._no_time_for(lite0, [], now + 1.0, 5) is None, "the first backbone is bounded by its limit"
    assert finetuning._no_time_for(lite0, [last], now + needed + 5, 5) is None
    why = finetuning._no_time_for(lite0, [last], now + needed - 5, 5)
    assert why is not None and why.startswith("efficientnet_lite0 needs ~")
    assert finetuning._no_time_for(lite0, [last], float("inf"), 5) is None


def test_the_winner_clears_the_bar_with_the_most_photos_right_and_ties_go_to_fewer_models() -> None:
    correct = {"chosen model": 350, "LP-FT a": 355, "LP-FT b": 357, "LP-FT averaged": 357, "blend": 352}
    assert finetuning._winner(correct, bar=351) == "LP-FT b", "a tie goes to the earlier (fewer models)"
    assert finetuning._winner(correct, bar=356) == "LP-FT b"
    assert finetuning._winner(correct, bar=357) is None, "above the bar, not at it"
    assert finetuning._winner({**correct, "blend": 360}, bar=351) == "blend"
    assert finetuning._winner({"chosen model": 400}, bar=0) is None, "the chosen model is the default, not a contender"


def test_without_flip_views_the_stage_compares_original_views_only(selected, monkeypatch) -> None:
    monkeypatch.setattr(finetuning, "EPOCHS", 1)
    recipe, *rest = selected
    plain = recipe.model_copy(update={"search": recipe.search.model_copy(update={"augment": False})})
    outcome = _run((plain, *rest))
    summary = outcome.summary
    assert summary.skipped is None and not summary.augment and len(summary.backbones) == len(BACKBONES)
    assert not any(ft.tta for ft in summary.backbones)
    assert finetuning.AVERAGED in [c.name for c in summary.contenders]
