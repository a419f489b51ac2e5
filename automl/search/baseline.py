"""The baseline: the default configuration (`automl.train.baseline_config`) trained alone on the first
(cheapest, extracted first: `FeaturePlan.for_search`) backbone's pooled vectors before the search, so the
trials can be judged against it in the trials table and the report (the exported model is chosen among the
LR-CV candidates and Tune's finalists, `automl.search.selection`; LR-CV is the stronger reference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from automl.runs.trials import BASELINE, TrialRecord, record_of
from automl.search.features import POOLED

if TYPE_CHECKING:
    from rich.console import Console

    from automl.recipe import Recipe
    from automl.runs.folder import RunFolder
    from automl.search.budget import SearchBudget
    from automl.search.features import FeatureSet
    from automl.train import TrialResult


def train_baseline(
    recipe: Recipe, features: FeatureSet, folder: RunFolder, budget: SearchBudget, console: Console
) -> TrialResult:
    """Train the baseline, bounded like a trial (`trial_time`, the deadline); kept in the run folder for resumes."""
    from automl.train import TimeLimit, TrialResult, baseline_config, train_trial

    if folder.baseline.is_file():
        return TrialResult.load(folder.baseline)
    config = {**baseline_config(), "backbone": features.backbones()[0], "cut": POOLED}
    data = features.trial_data(config["backbone"], POOLED)
    result = train_trial(config, data, [TimeLimit(budget.time_limit(recipe.budget.trial_time))])
    result.save(folder.baseline)
    console.print(
        f"[bold]baseline[/bold] {baseline_record(result).describe()}: val accuracy {result.best_val_accuracy:.4f}"
    )
    return result


def baseline_record(result: TrialResult) -> TrialRecord:
    """The baseline as a trial record, so the table and the choice of the best include it."""
    return record_of(result, BASELINE, BASELINE, baseline=True)
