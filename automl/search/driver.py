"""`automl search`'s driver: `run_search` runs the phases of one search in order, each in its own module.

1. the run folder (new, or the one to resume: `_new_folder`, `_resume_folder`)
2. the data, backbones and search space (`_prepare`)
3. Ray: local, or a cluster (`automl.search.cluster`)
4. the features every trial reads, from the bottleneck cache (`automl.search.features`)
5. LR-CV on each backbone over the development pool (train + val, `search.folds` folds), and a
   provisional model exported from it (`automl.search.selection`): from here on the run folder holds a model
6. the baseline (`automl.search.baseline`)
7. the trials on Ray Tune (`automl.search.tuner`), watched by the progress line (`automl.search.progress`)
8. the trials table (`automl.search.tune_state` → `automl.runs.TrialTable`)
9. selection: Tune's best trials of each head cross-validated beside LR-CV, calibrated, the best single
   or the greedy ensemble (`automl.search.selection`)
9b. the fine-tuning stage: LP-FT of the chosen backbone against its probe on a held-out fold; the winner is
   exported (`automl.search.finetuning`)
10. the chosen model exported and tested (`automl.search.export`)
11. summary.json (`automl.runs.Summary`), the dataset audit (`automl.audit`) and report.html

The budgets (time, trials, target accuracy) are `automl.search.budget`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from automl.atomic import write_atomic
from automl.dimensions import Value
from automl.errors import InputError
from automl.machine import describe as describe_machine
from automl.paths import cache_root
from automl.recipe import Recipe, dump_recipe
from automl.runs.folder import RunFolder
from automl.runs.records import BaselineResult, BestTrial, RayCluster, Summary
from automl.runs.trials import TrialRecord, TrialTable
from automl.search.budget import AUDIT_S, LATENCY_S, REPORT_S, RUNTIMES_S, SearchBudget, trial_count
from automl.search.export import export_choice, measure_latency
from automl.search.finetuning import finetune_stage
from automl.search.selection import selection_summary

FINALIST_SHARE = 0.4
"""Share of the final reserve the cross-validation of Tune's finalists may use (the rest: export, test, report)."""

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset
    from automl.monitoring.mlflow_logging import Tracking
    from automl.search.cluster import RaySession
    from automl.search.features import BackbonePart, FeaturePlan, FeatureReport, FeatureSet
    from automl.search.selection import Candidate, Choice
    from automl.search.space import SearchSpace
    from automl.train import TrialResult


@dataclass
class SearchOutcome:
    """What `automl search --json` prints, also saved as summary.json."""

    summary: Summary
    run_dir: Path


@dataclass(frozen=True)
class Development:
    """The development pool's labels (train then val rows) and its cross-validation folds."""

    y: np.ndarray
    folds: np.ndarray
    k: int


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

    started = time.time()
    console = console or Console(stderr=True)
    budget = SearchBudget.start(recipe, started)
    folder = _resume_folder(recipe, resume) if resume else _new_folder(recipe)
    console.print(f"[bold]run folder[/bold] {folder.root}")
    phases = Phases()
    dataset, backbones, space, plan = _prepare(recipe, console)
    with phases.measure("ray_start"):
        session = _connect(recipe, address, console)
    tracking = _watch(recipe, folder, console)
    first_model = FirstModel(recipe, dataset, backbones, folder, console, started)
    features, feature_report, space = _features(
        recipe, dataset, backbones, plan, space, folder, budget, console, on_done=first_model
    )
    phases.seconds["features"] = round(feature_report.seconds, 2)
    with phases.measure("lr_cv"):
        development = _development_pool(recipe, features, dataset)
        candidates = _lr_cv(development, features, console, first_model)
    with phases.measure("provisional_export"):
        if len(candidates) > 1:  # the first backbone's model is there already: the best of all of them now
            provisional = _choose(recipe, development, candidates, console, quiet=True)
            _export_provisional(recipe, dataset, backbones, provisional, folder, console, started)
    no_trials = budget.no_time_for_trials(feature_report.seconds)
    baseline: TrialResult | None = None
    if no_trials:
        console.print(f"[yellow]trials:[/yellow] skipped: {no_trials}")
        trials = TrialTable()
    else:
        with phases.measure("baseline"):
            baseline = train_baseline(recipe, features, folder, budget, console)
        with phases.measure("trials"):
            trials = _trials(recipe, space, features, folder, budget, resume is not None, console)
    counts = trials.counts()
    stop_reason = "time" if no_trials else budget.stop_reason(counts, trial_count(recipe, space), recipe.budget.trials)
    trials = (trials.plus(baseline_record(baseline)) if baseline else trials).ranked()
    trials.write(folder.trials)
    with phases.measure("selection"):
        candidates += _finalists(trials, development, features, budget, console)
        choice = _choose(recipe, development, candidates, console)
    with phases.measure("finetune"):
        selected = choice  # out-of-fold probabilities of every pool photo: what the audit judges labels by
        finetuned = finetune_stage(
            recipe, dataset, backbones, features, development, selected, budget, console, plan.stage
        )
        choice = finetuned.choice  # the fine-tuned model, when it won: held-out predictions of fold 0 only
    with phases.measure("export_and_test"):
        runtimes = budget.left() > RUNTIMES_S + AUDIT_S
        if not runtimes:
            console.print("[yellow]export:[/yellow] no time left to convert and check SavedModel/TFLite/OpenVINO")
        metrics = export_choice(recipe, dataset, backbones, choice, folder, runtimes=runtimes)
    assert metrics is not None
    with phases.measure("latency"):
        latency = measure_latency(recipe, dataset, backbones, choice, folder) if budget.left() > LATENCY_S else None
    estimate = choice.estimate()
    summary = Summary(
        run_dir=str(folder.root),
        recipe=recipe.name,
        stop_reason=stop_reason,
        wall_seconds=round(time.time() - started, 1),
        budget_seconds=budget.seconds if math.isfinite(budget.seconds) else None,
        trials=counts,
        best=BestTrial(
            trial=choice.name,
            config=_config_of(choice),
            val_accuracy=estimate["accuracy"],
            test_top1=metrics.top1,
            test_top1_ci95=metrics.top1_ci95,
            test_top5=metrics.top5,
        ),
        baseline=BaselineResult(config=baseline.config, val_accuracy=baseline.best_val_accuracy) if baseline else None,
        feature_seconds=round(feature_report.seconds, 2),
        cache=feature_report.to_record(),
        phases=phases.seconds,
        model=str(folder.model),
        ray=RayCluster(address=session.address, dashboard=session.dashboard_url, nodes=session.nodes),
        machine=describe_machine(),
        selection=selection_summary(choice, latency or (None, None)),
        first_model_seconds=first_model.seconds,
        finetune=finetuned.summary,
    )
    summary.write(folder.summary)
    if budget.left() > AUDIT_S:
        audit_run(  # never raises (automl.audit.run); extracting the test photos' features stops with the budget
            folder.root,
            probabilities=_oof_by_photo(selected, features),
            deadline=time.time() + budget.left() - REPORT_S,
        )
    else:
        console.print("[yellow]audit:[/yellow] no time left; `automl data audit RECIPE` runs it on the cached features")
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
    write_atomic(folder.recipe, dump_recipe(recipe))
    folder.tune.mkdir()
    write_atomic(folder.origin, str(folder.root))
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


def _prepare(recipe: Recipe, console: Console) -> tuple[Dataset, dict[str, Backbone], SearchSpace, FeaturePlan]:
    """The data, the backbones, the Tune space and the features the search reads (`FeaturePlan`)."""
    from automl.audit.grouping import dataset_for_recipe
    from automl.backbones.registry import get_backbone
    from automl.search.features import FeaturePlan, extraction_cost
    from automl.search.space import build_space

    dataset = dataset_for_recipe(recipe)  # near-duplicate groups kept in one split with data.group_near_duplicates
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
    cut_points = {name: list(b.cut_points()) for name, b in backbones.items()}
    space = build_space(recipe.search, cut_points)
    unchosen = sorted({cut for cuts in space.cuts_by_backbone.values() for cut in cuts} - {"all"})
    if unchosen:  # only cut `all` trials are cross-validated as candidates (`_finalists`)
        console.print(
            f"[yellow]search:[/yellow] trials on cuts {unchosen} are run and reported but never exported (only cut "
            "`all` trials are cross-validated for the selection); set search.finetune: true to fine-tune instead"
        )
    plan = FeaturePlan.for_search(
        recipe.search, cut_points, {name: extraction_cost(backbone) for name, backbone in backbones.items()}
    )
    counts = {split: len(dataset.split(split)) for split in ("train", "val", "test")}
    console.print(f"[bold]data[/bold] {dataset.root}: {len(dataset.classes)} classes, {counts}")
    return dataset, backbones, space, plan


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
    plan: FeaturePlan,
    space: SearchSpace,
    folder: RunFolder,
    budget: SearchBudget,
    console: Console,
    *,
    on_done: Callable[[BackbonePart], None] | None = None,
) -> tuple[FeatureSet, FeatureReport, SearchSpace]:
    """Extract backbone by backbone, cheapest first, until `MIN_TRIAL_S` before the trials' deadline; the
    features and the space on the backbones that finished (the others' parts stay cached for the next search)."""
    from automl.search.budget import MIN_TRIAL_S
    from automl.search.features import ExtractionLog, prepare_features

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
        on_done=on_done,
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


def _development_pool(recipe: Recipe, features: FeatureSet, dataset: Dataset) -> Development:
    """Train + val as one pool, its labels and its cross-validation folds: a function of each photo's group key
    (its SHA-1, or its near-duplicate group's with `data.group_near_duplicates`, so near-copies share a fold)."""
    first = next(iter(features.backbones()))
    _, y, sha1s = features.pool(first)
    return Development(y=y, folds=_folds(recipe, dataset, sha1s, y), k=recipe.search.folds)


def _folds(recipe: Recipe, dataset: Dataset, sha1s: list[str], y: np.ndarray) -> np.ndarray:
    from automl.selection.folds import assign_folds

    keys = [dataset.group_key(sha1) for sha1 in sha1s]
    return assign_folds(keys, y.tolist(), k=recipe.search.folds, seed=recipe.search.seed)


def _lr_cv(
    development: Development, features: FeatureSet, console: Console, fitted: FirstModel | None = None
) -> list[Candidate]:
    """LR-CV on each backbone's pooled vectors: the baseline, and the first candidates of the selection. The first
    model's LR-CV (`fitted`) is reused when it was fitted on the same photos (hence the same folds)."""
    from automl.search.selection import Pool, lr_cv_candidate

    candidates = []
    for name in features.backbones():
        x, y, sha1s = features.pool(name)
        if fitted is not None and fitted.candidate is not None and fitted.fitted_on == (name, sha1s):
            candidate = fitted.candidate
        else:
            candidate = lr_cv_candidate(name, Pool(x, y), development.folds, features.num_classes)
        scores = candidate.scores(y)
        console.print(
            f"[bold]lr-cv[/bold] {name}: C={candidate.details['C']:g}, OOF accuracy {scores['oof_accuracy']:.4f}, "
            f"log-loss {scores['oof_log_loss']:.4f} (T={candidate.temperature.temperature:.2f}, "
            f"{candidate.seconds:.1f} s)"
        )
        candidates.append(candidate)
    return candidates


def _finalists(
    trials: TrialTable, development: Development, features: FeatureSet, budget: SearchBudget, console: Console
) -> list[Candidate]:
    """The best complete Tune trial of each head type on cut `all`, cross-validated (`trial_candidate`).

    They may use up to `FINALIST_SHARE` of the final reserve; one that would run past it is left out.
    """
    from automl.runs.trials import BASELINE, TrialStatus
    from automl.search.selection import TRIAL_FINALISTS, Pool, trial_candidate
    from automl.train import TrialResult

    deadline = budget.deadline + FINALIST_SHARE * budget.reserve
    chosen: dict[object, TrialRecord] = {}
    for trial in trials.get(states=[TrialStatus.COMPLETE]):
        head = trial.params.get("head")
        if trial.name != BASELINE and trial.params.get("cut") == "all" and trial.checkpoint and head not in chosen:
            chosen[head] = trial
    finalists = []
    for trial in list(chosen.values())[:TRIAL_FINALISTS]:
        assert trial.checkpoint is not None  # chosen above
        trained = TrialResult.load(trial.checkpoint)
        x, y, _ = features.pool(str(trained.config["backbone"]))
        candidate = trial_candidate(trial.name, trained, Pool(x, y), development.folds, features.num_classes, deadline)
        if candidate is None and time.time() > deadline:
            console.print(f"[yellow]selection:[/yellow] no time left to cross-validate trial {trial.name}")
            break
        if candidate is None:
            console.print(f"[yellow]selection:[/yellow] trial {trial.name} diverged on a fold: left out")
            continue
        scores = candidate.scores(y)
        console.print(
            f"[bold]finalist[/bold] {trial.describe()}: OOF accuracy {scores['oof_accuracy']:.4f}, "
            f"log-loss {scores['oof_log_loss']:.4f} ({candidate.seconds:.1f} s)"
        )
        finalists.append(candidate)
    return finalists


def _choose(
    recipe: Recipe, development: Development, candidates: list[Candidate], console: Console, *, quiet: bool = False
) -> Choice:
    from automl.search.selection import choose

    search = recipe.search
    choice = choose(
        candidates, development.y, development.k, ensemble=search.ensemble, max_members=search.ensemble_max_members
    )
    if quiet:
        return choice
    estimate = choice.estimate()
    low, high = estimate["accuracy_ci95"]
    console.print(
        f"[bold]chosen[/bold] {choice.name}: cross-validated accuracy {estimate['accuracy']:.4f} "
        f"(95 % {low:.3f}-{high:.3f}), log-loss {estimate['log_loss']:.4f}, ECE {estimate['ece']:.3f}"
    )
    return choice


def _export_provisional(
    recipe: Recipe,
    dataset: Dataset,
    backbones: dict[str, Backbone],
    choice: Choice,
    folder: RunFolder,
    console: Console,
    started: float,
) -> None:
    """The best model so far into the run folder: a search stopped from here on leaves one.

    `summary.json` says `provisional: true` until the final model replaces it (both written atomically).
    """
    export_choice(recipe, dataset, backbones, choice, folder, test=False)
    estimate = choice.estimate()
    Summary(
        run_dir=str(folder.root),
        recipe=recipe.name,
        provisional=True,
        wall_seconds=round(time.time() - started, 1),
        best=BestTrial(trial=choice.name, config=_config_of(choice), val_accuracy=estimate["accuracy"]),
        model=str(folder.model),
        selection=selection_summary(choice),
    ).write(folder.summary)
    console.print(
        f"[bold]provisional model[/bold] {choice.name} (cross-validated accuracy {estimate['accuracy']:.4f}) "
        f"in {folder.model}, {time.time() - started:.0f} s after the start"
    )


class FirstModel:
    """Called as each backbone's features are done (`prepare_features(on_done=...)`): the first one's LR-CV
    model is exported at once, so the run folder holds a model while the other backbones are extracted."""

    def __init__(
        self,
        recipe: Recipe,
        dataset: Dataset,
        backbones: dict[str, Backbone],
        folder: RunFolder,
        console: Console,
        started: float,
    ) -> None:
        self.recipe, self.dataset, self.backbones, self.folder = recipe, dataset, backbones, folder
        self.console, self.started = console, started
        self.seconds: float | None = None
        """Seconds from the search's start to its first model in the run folder."""
        self.candidate: Candidate | None = None
        self.fitted_on: tuple[str, list[str]] | None = None
        """The first model's backbone and pool photos (train then val): `_lr_cv` reuses it on the same ones."""

    def __call__(self, part: BackbonePart) -> None:
        from automl.search.features import POOLED, FeatureSet
        from automl.search.selection import Choice, Pool, lr_cv_candidate

        if self.seconds is not None:
            return
        arrays = part.arrays[FeatureSet.key(part.backbone, POOLED)]
        x = np.concatenate([arrays["x_train"], arrays["x_val"]])
        y = np.concatenate([arrays["y_train"], arrays["y_val"]])
        search = self.recipe.search
        sha1s = [*part.sha1s["train"], *part.sha1s["val"]]
        folds = _folds(self.recipe, self.dataset, sha1s, y)
        candidate = lr_cv_candidate(part.backbone, Pool(x, y), folds, len(self.dataset.classes))
        self.candidate, self.fitted_on = candidate, (part.backbone, sha1s)
        choice = Choice([candidate], np.ones(1), y, search.folds)
        _export_provisional(self.recipe, self.dataset, self.backbones, choice, self.folder, self.console, self.started)
        self.seconds = round(time.time() - self.started, 1)


def _oof_by_photo(choice: Choice, features: FeatureSet) -> dict[str, list[float]]:
    """The selection's out-of-fold probabilities by photo: what the audit judges labels by (no refit; a fine-tuned
    model has held-out predictions of one fold only, so the audit reads the selection's choice)."""
    _, _, sha1s = features.pool(features.backbones()[0])
    return {sha1: row.tolist() for sha1, row in zip(sha1s, choice.oof_probabilities, strict=True)}


def _config_of(choice: Choice) -> dict[str, Value]:
    first = choice.members[0][0]
    return {"backbone": first.backbone, "cut": first.cut, **first.details}


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
