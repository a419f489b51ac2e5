"""The Tune wiring: the trainable (one trial) and the Tuner that runs them (Optuna proposes, ASHA or FIFO
stops poor trials, `automl.search.budget` ends the search).

Layout of the Tune experiment: `<run>/tune/search/` (Tune's CSV, JSON and TensorBoard logs per trial,
its experiment state, and one checkpoint per finished trial holding the trained weights).

How a trial ends, and why its weights survive: `train_trial` reports each epoch to Tune; when training
ends (its epochs, its time limit, the search deadline, or the target accuracy reached) the trial makes
one more report, flagged `final`, carrying its `TrialResult` as a checkpoint. ASHA's `max_t` is one
more than the epochs so that this final report is never cut off by the scheduler; trials ASHA prunes
at a rung leave no checkpoint (they cannot be the best). Trials also end themselves before the search
deadline (their time limit is the time left), so the last trials of a search still leave a model.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Stopper

from automl.runs.folder import RESULT_FILE, RunFolder
from automl.search.budget import METRIC, SearchBudget, trial_count
from automl.search.space import SearchSpace

if TYPE_CHECKING:
    from ray.tune import ResultGrid
    from ray.tune.experiment import Trial

    from automl.recipe import Recipe
    from automl.search.features import FeatureSet

ASHA_GRACE_EPOCHS = 2
ASHA_REDUCTION = 3
EXPERIMENT_STATE_PERIOD_S = "1"
"""How often Tune saves its experiment state: a driver killed within this window of a trial's end may
re-run that trial on resume (Tune's default, 10 s or more, would widen the window)."""
MAX_TRIAL_RETRIES = 1
"""A trial whose worker dies (or that raises) is retried once, then recorded as failed."""

_BUDGETS: dict[str, SearchBudget] = {}
"""The live budget of each search in this driver process, by run folder (see `BudgetStopper`)."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial needs besides its configuration; shipped once with the features."""

    cpus: float
    weights: str
    budget: SearchBudget
    """The search's budget when the trials started: its deadline and target."""
    trial_time: float | None


def automl_trial(config: dict[str, Any], features: FeatureSet, settings: TrialSettings) -> None:
    """One Tune trial: train `config` on the shared features, report per epoch, leave its weights."""
    import ray
    from ray import tune

    from automl.train import ReportMetrics, TargetAccuracy, TimeLimit, TrialCallback, configure_threads, train_trial

    configure_threads(settings.cpus)
    node_id = ray.get_runtime_context().get_node_id()
    backbone, cut = config["backbone"], config["cut"]
    rest = None if cut == "all" else _trainable_rest(backbone, settings.weights, cut)
    data = features.trial_data(backbone, cut, rest)
    callbacks: list[TrialCallback] = [
        ReportMetrics(lambda metrics: tune.report({**metrics, "node_id": node_id, "final": False})),
        TimeLimit(settings.budget.time_limit(settings.trial_time)),
    ]
    if settings.budget.target_accuracy is not None:
        callbacks.append(TargetAccuracy(settings.budget.target_accuracy, METRIC))
    result = train_trial(_train_config(config), data, callbacks)
    with tempfile.TemporaryDirectory() as folder:
        result.save(Path(folder) / RESULT_FILE)
        tune.report(
            {
                METRIC: result.best_val_accuracy,
                "val_top5": result.best_val_top5,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "train_seconds": result.seconds,
                "parameter_count": result.parameter_count,
                "cache_hits": features.rows,
                "node_id": node_id,
                "final": True,
            },
            checkpoint=tune.Checkpoint.from_directory(folder),
        )


def _train_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration without Optuna's per-backbone parameter names (`cut@<backbone>`)."""
    return {key: value for key, value in config.items() if "@" not in key}


@lru_cache(maxsize=2)
def _backbone_model(name: str, weights: str) -> Any:
    """The whole backbone, built once per worker (reused actors run many trials)."""
    from automl.backbones.registry import get_backbone

    return get_backbone(name).build(weights)


def _trainable_rest(name: str, weights: str, cut: str) -> Any:
    from automl.backbones.registry import get_backbone

    return get_backbone(name).trainable_rest(_backbone_model(name, weights), cut)


def trial_name(trial: Trial) -> str:
    """Readable, unique trial names: backbone, cut, head, optimizer, id (`efficientnet_lite0-all-mlp-adam-40b1a405`)."""
    parts = [trial.config.get(key, "?") for key in ("backbone", "cut", "head", "optimizer")]
    return "-".join([*map(str, parts), trial.trial_id])


class BudgetStopper(Stopper):
    """Stops the whole search when its `SearchBudget` says so (the deadline passed, or the target was reached).

    Tune pickles its stopper into the experiment state and, on resume, restores that copy; so this
    object keeps only the run folder and looks the live budget up in the driver (`_BUDGETS`): a
    resumed search is held to the budget of the invocation that resumed it.
    """

    def __init__(self, run_key: str) -> None:
        self.run_key = run_key

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        _BUDGETS[self.run_key].observe(result)
        return False

    def stop_all(self) -> bool:
        return _BUDGETS[self.run_key].stop_all()


def run_trials(
    recipe: Recipe,
    space: SearchSpace,
    features: FeatureSet,
    run_dir: Path,
    budget: SearchBudget,
    *,
    resume: bool,
) -> ResultGrid:
    """Run (or resume) the Tune experiment of `run_dir` until a budget ends it; Ray must be running."""
    import optuna
    from ray import tune

    from automl.monitoring.optuna_study import RunStudySearch  # monitoring hook (issue 17)
    from automl.monitoring.trial_names import named_trials  # monitoring hook (issue 17)
    from automl.monitoring.tune_callbacks import tune_callbacks  # monitoring hook (issue 17)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: Tune prints nothing, we show progress
    run_key = str(run_dir.resolve())
    _BUDGETS[run_key] = budget
    resources = recipe.resources
    settings = TrialSettings(
        cpus=resources.cpus_per_trial,
        weights=recipe.search.weights,
        budget=budget,
        trial_time=recipe.budget.trial_time,
    )
    trainable = named_trials(  # monitoring hook (issue 17): trial actors named by their configuration
        tune.with_resources(
            tune.with_parameters(automl_trial, features=features, settings=settings),
            {"cpu": resources.cpus_per_trial},
        )
    )
    path = RunFolder(run_dir).experiment
    if resume:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False)
        return tuner.fit()
    searcher = RunStudySearch(  # monitoring hook (issue 17): the study in <run>/optuna.log, pruned trials PRUNED
        space, metric=METRIC, mode="max", sampler=space.sampler(), run_dir=run_dir, study_name=recipe.name or "search"
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(recipe),
            num_samples=trial_count(recipe, space),
            max_concurrent_trials=resources.concurrent_trials,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=path.name,
            storage_path=str(path.parent.resolve()),
            stop=BudgetStopper(run_key),
            callbacks=tune_callbacks(run_dir, METRIC, searcher),  # monitoring hook (issue 17): Ray metrics, MLflow
            failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_RETRIES),
            verbose=0,
        ),
    )
    return tuner.fit()


def _scheduler(recipe: Recipe) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if recipe.search.scheduler == "fifo":
        return FIFOScheduler()
    epochs = recipe.search.epochs
    return ASHAScheduler(
        metric=METRIC,
        mode="max",
        time_attr="training_iteration",
        max_t=epochs + 1,  # + the final report (see the module docstring)
        grace_period=min(ASHA_GRACE_EPOCHS, epochs),
        reduction_factor=ASHA_REDUCTION,
    )
