"""One `automl search`: run folder, features, baseline, trials, then the best model exported and evaluated.

Time: the recipe's `budget.time` covers everything from the start of this call, Ray start-up and
feature extraction included. Trials must end by `deadline - final reserve`; the reserve pays for what
follows the trials (exporting the model, evaluating it on the test photos, the SavedModel/TFLite checks
and the report), so the whole search ends within the budget, give or take one epoch.

The best model: among finished trials and the baseline (the default configuration, trained alone on the
same split before the search), the highest validation accuracy, ties to the faster. Its weights come
from its checkpoint (no retraining), so the exported model is the very one that was validated.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console

from automl.audit.run import audit_run
from automl.errors import AutomlError, InputError, RecipeError
from automl.paths import cache_root, write_atomic
from automl.recipe import Recipe, dump_recipe
from automl.search.layout import METRIC, RunLayout

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset, ImageRecord
    from automl.search.features import FeatureReport, FeatureSet
    from automl.search.space import SearchSpace
    from automl.train import TrialResult

MIN_TRIAL_S = 20.0
"""Least trial time worth starting a search for (one trial of a few epochs on cached features)."""
BASELINE_NAME = "baseline"


def final_reserve(budget_s: float) -> float:
    """Seconds kept after the trials for export, test evaluation, runtime checks and the report."""
    return min(max(40.0, 0.12 * budget_s), 120.0)


@dataclass
class SearchOutcome:
    """What `automl search --json` prints, also saved as summary.json."""

    summary: dict[str, Any]
    run_dir: Path


def run_search(
    recipe: Recipe,
    *,
    resume: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> SearchOutcome:
    """Run the recipe's search (or resume the one in `resume`) and export its best model."""
    started = time.time()
    console = console or Console(stderr=True)
    budget_s = recipe.budget.time if recipe.budget.time is not None else math.inf
    reserve = final_reserve(budget_s) if math.isfinite(budget_s) else 0.0
    _check_budget(recipe, reserve)
    layout = _resume_layout(recipe, resume) if resume else _new_layout(recipe)
    phases: dict[str, float] = {}
    console.print(f"[bold]run folder[/bold] {layout.root}")

    from automl.search.cluster import connect, resolve_address

    dataset, backbones, space = _prepare(recipe, console)
    clock = time.perf_counter()
    session = connect(resolve_address(address, recipe.resources.address))
    phases["ray_start"] = time.perf_counter() - clock
    where = f"cluster {session.address}" if session.address else "local Ray"
    console.print(f"[bold]ray[/bold] {where}: {session.nodes} node(s), {session.cpus:g} CPUs")
    if session.dashboard_url:
        console.print(f"[bold]dashboard[/bold] {session.dashboard_url}  ({session.auth_hint})")

    features, feature_report, test_records = _features(recipe, dataset, backbones, space, console)
    phases["features"] = feature_report.seconds
    search_deadline = started + budget_s - reserve
    if search_deadline - time.time() < MIN_TRIAL_S:
        raise AutomlError(
            f"budget.time: {budget_s:.0f} s are spent before the first trial (features took "
            f"{feature_report.seconds:.0f} s, {reserve:.0f} s are kept for the export)",
            hint="raise budget.time, or build the features first with `automl cache build RECIPE`",
        )
    clock = time.perf_counter()
    baseline = _baseline(recipe, features, layout, search_deadline, console)
    phases["baseline"] = time.perf_counter() - clock

    from automl.search.progress import SearchProgress
    from automl.search.runner import SearchBudget, run_trials, trial_count

    budget = SearchBudget(deadline=search_deadline, target_accuracy=recipe.budget.target_accuracy)
    clock = time.perf_counter()
    with SearchProgress(layout.root, search_deadline, console):
        run_trials(recipe, space, features, layout.root, budget, resume=resume is not None)
    phases["trials"] = time.perf_counter() - clock

    from automl.search.leaderboard import best_trial, collect_trials, counts

    trials = _with_baseline(collect_trials(layout.root), baseline)
    _write_parquet(trials, layout.trials)
    tally = counts(trials[trials["name"] != BASELINE_NAME])
    if tally["complete"] == 0 and tally["failed"]:
        first = trials.loc[trials["status"] == "failed", "error"].iloc[0]
        raise AutomlError(f"all {tally['failed']} trials failed; the first error: {first}")
    best = best_trial(trials)
    stop_reason = _stop_reason(budget, tally, trial_count(recipe, space), recipe.budget.trials, search_deadline)
    clock = time.perf_counter()
    model_path, config, metrics = _export(recipe, dataset, backbones, best, layout, test_records, baseline)
    phases["export_and_test"] = time.perf_counter() - clock
    summary = {
        "run_dir": str(layout.root),
        "recipe": recipe.name,
        "stop_reason": stop_reason,
        "wall_seconds": round(time.time() - started, 1),
        "budget_seconds": budget_s if math.isfinite(budget_s) else None,
        "trials": tally,
        "best": {
            "trial": best["name"],
            "config": config,
            METRIC: float(best[METRIC]),
            "test_top1": metrics.get("top1"),
            "test_top1_ci95": metrics.get("top1_ci95"),
            "test_top5": metrics.get("top5"),
        },
        "baseline": {"config": baseline.config, METRIC: baseline.best_val_accuracy},
        "feature_seconds": round(feature_report.seconds, 2),
        "cache": feature_report.to_dict(),
        "phases": {name: round(seconds, 2) for name, seconds in phases.items()},
        "model": str(model_path),
        "ray": {"address": session.address, "dashboard": session.dashboard_url, "nodes": session.nodes},
    }
    _write_json(layout.summary, summary)
    audit_run(layout.root)  # audit.json, shown by the report; never raises (automl.audit.run)
    _write_report(layout.root, console)
    return SearchOutcome(summary=summary, run_dir=layout.root)


def _check_budget(recipe: Recipe, reserve: float) -> None:
    """Refuse up front a budget that cannot hold one trial, naming the key to change."""
    budget = recipe.budget
    if budget.time is not None and budget.time - reserve < MIN_TRIAL_S:
        raise RecipeError(
            f"budget.time: {budget.time:g} s cannot fit one trial: {reserve:.0f} s are kept for exporting and "
            f"testing the best model and a trial needs at least {MIN_TRIAL_S:.0f} s",
            hint=f"set budget.time to at least {math.ceil(reserve + MIN_TRIAL_S + 30)}s",
        )


def _new_layout(recipe: Recipe) -> RunLayout:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(recipe.output.folder).expanduser() / f"{recipe.name}-{stamp}"
    root.mkdir(parents=True, exist_ok=False)
    layout = RunLayout(root.resolve())
    layout.recipe.write_text(dump_recipe(recipe), encoding="utf-8")
    layout.tune.mkdir()
    layout.origin.write_text(str(layout.root), encoding="utf-8")
    return layout


def _resume_layout(recipe: Recipe, run_dir: Path) -> RunLayout:
    """The run folder to resume: it must hold a Tune experiment started from this same recipe."""
    from ray.tune import Tuner

    layout = RunLayout(run_dir.expanduser().resolve())
    if not layout.recipe.is_file() or not Tuner.can_restore(str(layout.experiment)):
        raise InputError(
            f"--resume {run_dir}: not a search run folder with trials to resume",
            hint="pass the folder an earlier `automl search` printed as its run folder",
        )
    origin = layout.origin.read_text(encoding="utf-8") if layout.origin.is_file() else str(layout.root)
    if origin != str(layout.root):  # Tune's pickled trials write to the old path: unfinished ones would fail
        raise InputError(
            f"--resume {run_dir}: this search started in {origin}, and Ray Tune's experiment state keeps that path",
            hint=f"move the folder back to {origin} to resume it (it can move anywhere once finished)",
        )
    if layout.recipe.read_text(encoding="utf-8") != dump_recipe(recipe):
        raise InputError(
            f"--resume {run_dir}: the recipe differs from the one this search started with ({layout.recipe})",
            hint="resume with the same recipe, or start a new search",
        )
    return layout


def _prepare(recipe: Recipe, console: Console) -> tuple[Dataset, dict[str, Backbone], SearchSpace]:
    from automl.backbones.registry import get_backbone
    from automl.data.dataset import Dataset
    from automl.search.space import build_space

    dataset = Dataset.from_recipe(recipe.data)
    for warning in dataset.warnings:
        console.print(f"[yellow]data:[/yellow] {warning}")
    if dataset.skipped:
        console.print(f"[yellow]data:[/yellow] {len(dataset.skipped)} file(s) skipped (see `automl data check`)")
    weights = recipe.search.weights
    backbones = {name: get_backbone(name) for name in recipe.search.backbones}
    for name, backbone in backbones.items():
        if not backbone.weights_offline(weights):
            raise InputError(
                f"search.backbones: {name} has no {weights!r} weights on this machine",
                hint="pick a backbone whose weights are offline (`automl backbones`), or connect to the internet",
            )
        if backbone.random_weights(weights):
            console.print(f"[bold red]WARNING: {name} uses RANDOM weights (search.weights: none): plumbing only")
    space = build_space(recipe.search, {name: list(b.cut_points()) for name, b in backbones.items()})
    counts = {split: len(dataset.split(split)) for split in ("train", "val", "test")}
    console.print(f"[bold]data[/bold] {dataset.root}: {len(dataset.classes)} classes, {counts}")
    return dataset, backbones, space


def _features(
    recipe: Recipe, dataset: Dataset, backbones: dict[str, Backbone], space: SearchSpace, console: Console
) -> tuple[FeatureSet, FeatureReport, list[ImageRecord]]:
    from automl.search.features import prepare_features

    needed = {name: tuple(cuts) for name, cuts in space.cuts_by_backbone.items()}
    first = recipe.search.backbones[0]
    needed[first] = tuple(dict.fromkeys(("all", *needed[first])))  # the baseline trains on cut `all`
    features, report, test_records = prepare_features(
        dataset,
        backbones,
        needed,
        recipe.search.weights,
        cache_root(recipe.cache),
        progress=console.is_terminal,
    )
    console.print(
        f"[bold]features[/bold] {report.seconds:.1f} s: {report.reused} cached, {report.computed} computed, "
        f"{len(report.failed)} unreadable; {features.nbytes / 2**20:.0f} MB shared with the trials"
    )
    return features, report, test_records


def _baseline(
    recipe: Recipe, features: FeatureSet, layout: RunLayout, deadline: float, console: Console
) -> TrialResult:
    """The default configuration on the first backbone, trained alone (kept in the run folder for resumes).

    Bounded like a trial (`trial_time`) and by the search's deadline, so the time budget holds.
    """
    from automl.train import TrialResult, baseline_config, train_trial

    if layout.baseline.is_file():
        return TrialResult.load(layout.baseline)
    config = {**baseline_config(), "backbone": recipe.search.backbones[0], "cut": "all"}
    time_limit = min(recipe.budget.trial_time or math.inf, deadline - time.time())
    result = train_trial(config, features.trial_data(config["backbone"], "all"), time_limit=time_limit)
    result.save(layout.baseline)
    console.print(
        f"[bold]baseline[/bold] {config['backbone']}/all softmax adam: val accuracy {result.best_val_accuracy:.4f}"
    )
    return result


def _with_baseline(trials: pd.DataFrame, baseline: TrialResult) -> pd.DataFrame:
    """The trials plus one row for the baseline, so the table and the choice of the best include it."""
    config = baseline.config
    optimizer_key = "epsilon" if config["optimizer"] == "adam" else "momentum"
    searched = ("backbone", "cut", "head", "optimizer", "learning_rate", optimizer_key, "batch_size")
    row = {
        "trial_id": BASELINE_NAME,
        "name": BASELINE_NAME,
        "status": "complete",
        METRIC: baseline.best_val_accuracy,
        "val_top5": baseline.best_val_top5,
        "epochs": len(baseline.history),
        "best_epoch": baseline.best_epoch,
        "seconds": baseline.seconds,
        **{f"param_{key}": config[key] for key in searched},
        "epoch_val_accuracy": json.dumps([epoch.get(METRIC) for epoch in baseline.history]),
        "baseline": True,
    }
    trials = trials.assign(baseline=False) if not trials.empty else trials
    return pd.concat([trials, pd.DataFrame([row])], ignore_index=True)


def _write_parquet(trials: pd.DataFrame, path: Path) -> None:
    """trials.parquet, written atomically; object columns of mixed types become strings."""
    table = trials.copy()
    for column in table.columns:
        if table[column].dtype == object and not table[column].map(lambda v: v is None or isinstance(v, str)).all():
            table[column] = table[column].map(lambda v: None if v is None or v != v else str(v))  # v != v: NaN
    staging = path.with_name(f".{path.name}.tmp")
    table.to_parquet(staging, engine="fastparquet", index=False)
    staging.replace(path)


def _stop_reason(budget: Any, tally: dict[str, int], planned: int, trials_budget: int | None, deadline: float) -> str:
    """Which budget ended the search: `target_accuracy`, `trials`, `search_space` (grid done), `time`,
    or `interrupted` (Ctrl-C: none of the budgets explains the end)."""
    if budget.target_reached:
        return "target_accuracy"
    if planned > 0 and tally["done"] + tally["failed"] >= planned:
        return "trials" if planned == trials_budget else "search_space"
    if time.time() >= deadline - 1.0:
        return "time"
    return "interrupted"


def _export(
    recipe: Recipe,
    dataset: Dataset,
    backbones: dict[str, Backbone],
    best: pd.Series,
    layout: RunLayout,
    test_records: list[ImageRecord],
    baseline: TrialResult,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Assemble the best trial's model from its checkpoint, save it atomically, evaluate it on the test photos.

    Returns the model's folder, the exact configuration it was trained with (its checkpoint's, not the
    trials table's, where a column some trials lack turns integers into floats) and the test metrics.
    """
    from automl.evaluate import evaluate_run
    from automl.exported import ExportedModel
    from automl.train import TrialResult, assemble

    trained = baseline if best["name"] == BASELINE_NAME else TrialResult.load(best["checkpoint"])
    config = trained.config
    backbone = backbones[config["backbone"]]
    weights = recipe.search.weights
    model = assemble(backbone, weights, config["cut"], trained, dataset.classes)
    meta = {
        "backbone": backbone.name,
        "weights": weights,
        "weights_id": backbone.weights_id(weights),
        "config": config,
        "trial": best["name"],
        METRIC: trained.best_val_accuracy,
        "recipe": recipe.name,
        "data": json.loads(recipe.data.model_dump_json()),
    }
    ExportedModel.save(layout.model, model, dataset.classes, backbone.resize, meta)
    _write_json(layout.labels, list(dataset.classes))
    metrics = evaluate_run(
        layout.root,
        [(record.path, dataset.classes[record.label]) for record in test_records],
        internal_classes=recipe.data.imagenet_classes,
        extra={"val_top1": trained.best_val_accuracy, "best_trial": best["name"]},
    )
    return layout.model, config, metrics


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def _write_report(run_dir: Path, console: Console) -> None:
    """report.html by the report module, when it is installed; a failed report never fails the search."""
    try:
        from automl.report import write_report
    except ImportError:
        return
    try:
        console.print(f"[bold]report[/bold] {write_report(run_dir)}")
    except Exception as exc:  # the model and metrics are written; the report is a view of them
        console.print(f"[yellow]report not written: {exc}")
