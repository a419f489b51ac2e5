"""`automl search`'s driver: `run_search` runs the phases of one search in order, each in its own module.

1. the run folder (new, or the one to resume: `_new_folder`, `_resume_folder`)
2. the data, backbones and search space (`_prepare`)
3. Ray: local, or a cluster (`automl.search.cluster`)
4. the features every trial reads, from the bottleneck cache (`automl.search.features`)
5. the baseline (`automl.search.baseline`)
6. the trials on Ray Tune (`automl.search.tuner`), watched by the progress line (`automl.search.progress`)
7. the trials table (`automl.search.tune_state` → `automl.runs.TrialTable`) and the best trial
8. the best model exported and tested (`automl.search.export`)
9. summary.json (`automl.runs.Summary`), the dataset audit (`automl.audit`) and report.html

The budgets (time, trials, target accuracy) are `automl.search.budget`'s. The best model: among
finished trials and the baseline, the highest validation accuracy, ties to the faster
(`TrialTable.best`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from automl.errors import AutomlError, InputError
from automl.machine import describe as describe_machine
from automl.paths import cache_root
from automl.recipe import Recipe, dump_recipe
from automl.runs.folder import RunFolder
from automl.runs.records import BaselineResult, BestTrial, RayCluster, Summary
from automl.runs.trials import TrialRecord, TrialTable
from automl.search.budget import SearchBudget, trial_count

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset
    from automl.monitoring.mlflow_logging import Tracking
    from automl.search.cluster import RaySession
    from automl.search.features import FeatureReport, FeatureSet
    from automl.search.space import SearchSpace


@dataclass
class SearchOutcome:
    """What `automl search --json` prints, also saved as summary.json."""

    summary: Summary
    run_dir: Path


@dataclass
class Phases:
    """Seconds per phase of the search, in the order they ran (summary.json's `phases`)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        clock = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - clock, 2)


def run_search(
    recipe: Recipe,
    *,
    resume: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> SearchOutcome:
    """Run the recipe's search (or resume the one in `resume`) and export its best model."""
    from automl.audit.run import audit_run
    from automl.search.baseline import baseline_record, train_baseline
    from automl.search.export import export_best

    started = time.time()
    console = console or Console(stderr=True)
    budget = SearchBudget.start(recipe, started)
    folder = _resume_folder(recipe, resume) if resume else _new_folder(recipe)
    console.print(f"[bold]run folder[/bold] {folder.root}")
    phases = Phases()
    dataset, backbones, space = _prepare(recipe, console)
    with phases.measure("ray_start"):
        session = _connect(recipe, address, console)
    tracking = _watch(recipe, folder, console)
    features, feature_report, space = _features(recipe, dataset, backbones, space, folder, budget, console)
    phases.seconds["features"] = round(feature_report.seconds, 2)
    budget.ensure_time_for_trials(feature_report.seconds)
    with phases.measure("baseline"):
        baseline = train_baseline(recipe, features, folder, budget, console)
    with phases.measure("trials"):
        trials = _trials(recipe, space, features, folder, budget, resume is not None, console)
    counts = trials.counts()
    stop_reason = budget.stop_reason(counts, trial_count(recipe, space), recipe.budget.trials)
    trials = trials.plus(baseline_record(baseline)).ranked()
    trials.write(folder.trials)
    best = _best(trials)
    with phases.measure("export_and_test"):
        exported = export_best(recipe, dataset, backbones, best, baseline, folder)
    summary = Summary(
        run_dir=str(folder.root),
        recipe=recipe.name,
        stop_reason=stop_reason,
        wall_seconds=round(time.time() - started, 1),
        budget_seconds=budget.seconds if math.isfinite(budget.seconds) else None,
        trials=counts,
        best=BestTrial(
            trial=best.name,
            config=exported.config,
            val_accuracy=best.val_accuracy,
            test_top1=exported.metrics.top1,
            test_top1_ci95=exported.metrics.top1_ci95,
            test_top5=exported.metrics.top5,
        ),
        baseline=BaselineResult(config=baseline.config, val_accuracy=baseline.best_val_accuracy),
        feature_seconds=round(feature_report.seconds, 2),
        cache=feature_report.to_record(),
        phases=phases.seconds,
        model=str(folder.model),
        ray=RayCluster(address=session.address, dashboard=session.dashboard_url, nodes=session.nodes),
        machine=describe_machine(),
    )
    summary.write(folder.summary)
    audit_run(folder.root)  # audit.json, shown by the report; never raises (automl.audit.run)
    _write_report(folder, console)
    if tracking is not None:  # results and files on the MLflow parent run
        tracking.finish(folder.root, summary.model_dump(mode="json"))
    return SearchOutcome(summary=summary, run_dir=folder.root)


def _watch(recipe: Recipe, folder: RunFolder, console: Console) -> Tracking | None:
    """Where to watch the search besides Ray's dashboard: Optuna's dashboard command, and MLflow when it is set up.

    Before the trials: Tune's MLflow callback reads the parent run from the run folder.
    """
    from automl.monitoring.mlflow_logging import start_tracking
    from automl.monitoring.optuna_study import dashboard_command

    console.print(f"[bold]optuna[/bold] {dashboard_command(folder.root)}")
    return start_tracking(folder.root, recipe.name or "search", recipe.model_dump(mode="json"), console)


def _new_folder(recipe: Recipe) -> RunFolder:
    folder = RunFolder.create(recipe.output.folder, recipe.name or "recipe")
    folder.recipe.write_text(dump_recipe(recipe), encoding="utf-8")
    folder.tune.mkdir()
    folder.origin.write_text(str(folder.root), encoding="utf-8")
    return folder


def _resume_folder(recipe: Recipe, run_dir: Path) -> RunFolder:
    """The run folder to resume: it must hold a Tune experiment started from this same recipe."""
    from automl.search.tune_state import can_resume

    folder = RunFolder(run_dir.expanduser().resolve())
    if not folder.is_run() or not can_resume(folder):
        raise InputError(
            f"--resume {run_dir}: not a search run folder with trials to resume",
            hint="pass the folder an earlier `automl search` printed as its run folder",
        )
    origin = folder.origin.read_text(encoding="utf-8") if folder.origin.is_file() else str(folder.root)
    if origin != str(folder.root):  # Tune's pickled trials write to the old path: unfinished ones would fail
        raise InputError(
            f"--resume {run_dir}: this search started in {origin}, and Ray Tune's experiment state keeps that path",
            hint=f"move the folder back to {origin} to resume it (it can move anywhere once finished)",
        )
    if folder.recipe.read_text(encoding="utf-8") != dump_recipe(recipe):
        raise InputError(
            f"--resume {run_dir}: the recipe differs from the one this search started with ({folder.recipe})",
            hint="resume with the same recipe, or start a new search",
        )
    return folder


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


def _connect(recipe: Recipe, address: str | None, console: Console) -> RaySession:
    from automl.search.cluster import connect, resolve_address

    session = connect(resolve_address(address, recipe.resources.address))
    where = f"cluster {session.address}" if session.address else "local Ray"
    console.print(f"[bold]ray[/bold] {where}: {session.nodes} node(s), {session.cpus:g} CPUs")
    if session.dashboard_url:
        console.print(f"[bold]dashboard[/bold] {session.dashboard_url}  ({session.auth_hint})")
    return session


def _features(
    recipe: Recipe,
    dataset: Dataset,
    backbones: dict[str, Backbone],
    space: SearchSpace,
    folder: RunFolder,
    budget: SearchBudget,
    console: Console,
) -> tuple[FeatureSet, FeatureReport, SearchSpace]:
    """Extract backbone by backbone, cheapest first, until `MIN_TRIAL_S` before the trials' deadline; the
    features and the space on the backbones that finished (the others' parts stay cached for the next search)."""
    from automl.search.budget import MIN_TRIAL_S
    from automl.search.features import ExtractionLog, FeaturePlan, extraction_cost, prepare_features

    costs = {name: extraction_cost(backbone) for name, backbone in backbones.items()}
    plan = FeaturePlan.for_search(recipe.search, space.cuts_by_backbone, costs)
    features, report = prepare_features(
        dataset,
        backbones,
        plan,
        recipe.search.weights,
        cache_root(recipe.cache),
        progress=console.is_terminal,
        engine=recipe.resources.engine,
        deadline=budget.deadline - MIN_TRIAL_S if math.isfinite(budget.deadline) else None,
        state=ExtractionLog(folder.extraction),
    )
    console.print(
        f"[bold]features[/bold] {report.seconds:.1f} s: {report.reused} cached, {report.computed} computed, "
        f"{len(report.failed)} unreadable; {features.nbytes / 2**20:.0f} MB shared with the trials"
    )
    for name, state in report.states.items():
        if state != "done":
            console.print(f"[yellow]features:[/yellow] {name} {state} for time; left out of the search space")
    return features, report, space.only(report.finished)


def _trials(
    recipe: Recipe,
    space: SearchSpace,
    features: FeatureSet,
    folder: RunFolder,
    budget: SearchBudget,
    resume: bool,
    console: Console,
) -> TrialTable:
    """Run (or resume) the Tune experiment with the live progress line; every trial it ran, as records."""
    from automl.search.progress import SearchProgress
    from automl.search.tune_state import collect_trials
    from automl.search.tuner import run_trials

    with SearchProgress(folder, budget.deadline, console):
        run_trials(recipe, space, features, folder.root, budget, resume=resume)
    return collect_trials(folder)


def _best(trials: TrialTable) -> TrialRecord:
    """The trial to export; every trial failing is an error naming the first failure."""
    best = trials.best()
    counts = trials.counts()
    if best is None or (counts.complete == 0 and counts.failed):
        raise AutomlError(f"all {counts.failed} trials failed; the first error: {trials.first_error()}")
    return best


def _write_report(folder: RunFolder, console: Console) -> None:
    """report.html by the report module, when it is installed; a failed report never fails the search."""
    try:
        from automl.report import write_report
    except ImportError:
        return
    try:
        console.print(f"[bold]report[/bold] {write_report(folder.root)}")
    except Exception as exc:  # the model and metrics are written; the report is a view of them
        console.print(f"[yellow]report not written: {exc}")
