"""The budgets of a search: when it must stop, how long a trial may run, and which budget ended it.

Time: the recipe's `budget.time` covers everything from the start of `run_search`, Ray start-up and
feature extraction included. Trials must end by the deadline, `start + budget.time - final reserve - the
fine-tuning share` (the stage runs after them);
the reserve pays for what follows the trials (exporting the model, evaluating it on the test photos,
the SavedModel/TFLite checks and the report), so the whole search ends within the budget, give or take
one epoch. Trials end themselves at the deadline (their time limit is the time left) with a final
report carrying their weights; the whole search is stopped `STOP_GRACE_S` later, so that report gets in.
Trials: `budget.trials`, capped by the size of a grid. Target: the first finished trial whose validation
accuracy reaches `budget.target_accuracy` ends the search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from automl.errors import RecipeError
from automl.runs.records import StopReason

if TYPE_CHECKING:
    from automl.recipe import Recipe
    from automl.runs.trials import TrialCounts
    from automl.search.space import SearchSpace

METRIC = "val_accuracy"
"""What the search maximises: the best epoch's accuracy on the validation split."""
MIN_TRIAL_S = 20.0
"""Least trial time worth starting a search for (one trial of a few epochs on cached features)."""
STOP_GRACE_S = 10.0
"""Trials end themselves at the deadline, after the epoch that passes it, with a final report carrying
their weights; the search stops all trials only this long after the deadline, so that report gets in."""


RUNTIMES_S = 45.0
"""What converting and checking SavedModel, TFLite and OpenVINO costs at the end of a search on 2 cores (30-60 s
measured on animals10 and natural_images): done only when that much of the budget is left."""
AUDIT_S = 20.0
"""What the dataset audit costs at the end of a search (LR-CV refit, the test photos' features): skipped without."""
REPORT_S = 5.0
"""What writing the report costs at the very end: the audit's extraction stops this long before the budget's end."""
LATENCY_S = 15.0
"""What timing one photo through the exported model costs (and through the best single candidate, saved and loaded
again, when the export is an ensemble): skipped without, the summary's latency then null."""


def final_reserve(budget_s: float) -> float:
    """Seconds kept after the trials for cross-validating Tune's finalists, export, test evaluation and the report.

    On 2 busy cores the export and test alone took 78-86 s with the runtime checks (a 3-minute search ran 66 s
    over a 40 s reserve): the checks are skipped when the budget has no room left (`SearchBudget.left`).
    """
    return min(max(60.0, 0.15 * budget_s), 150.0)


MIN_FINETUNE_S = 60.0
"""Least time worth starting the fine-tuning stage with: a few `top` epochs of a few hundred photos on 2 cores."""


def finetune_carve_out(recipe: Recipe, after_reserve: float) -> float:
    """Seconds the trials give up to the fine-tuning stage: `search.finetune_share` of `budget.time` when the
    stage has a cut to fine-tune, and nothing when that is under `MIN_FINETUNE_S` (the stage would not start: a
    3-minute natural_images search left its 45 s idle) or the trials would be left less than `MIN_TRIAL_S`."""
    from automl.search.space import finetune_cuts

    search = recipe.search
    if not search.finetune or not finetune_cuts(search) or not math.isfinite(after_reserve):
        return 0.0
    share = search.finetune_share * (recipe.budget.time or 0.0)
    return share if share >= MIN_FINETUNE_S and after_reserve - share >= MIN_TRIAL_S else 0.0


@dataclass
class SearchBudget:
    """The budgets the driver checks while Tune runs: the deadline, and whether the target was reached."""

    deadline: float
    """Wall-clock time (time.time()) by which trials must have ended."""
    target_accuracy: float | None
    target_reached: bool = False
    seconds: float = math.inf
    """The recipe's whole time budget."""
    reserve: float = 0.0
    finetune: float = 0.0
    """Seconds kept for the fine-tuning stage after the trials (`automl.search.finetuning`)."""

    @classmethod
    def start(cls, recipe: Recipe, started: float) -> SearchBudget:
        """The budget of a search started at `started`; a time budget too short for one trial is refused."""
        seconds = recipe.budget.time if recipe.budget.time is not None else math.inf
        reserve = final_reserve(seconds) if math.isfinite(seconds) else 0.0
        if seconds - reserve < MIN_TRIAL_S:
            raise RecipeError(
                f"budget.time: {seconds:g} s cannot fit one trial: {reserve:.0f} s are kept for exporting and "
                f"testing the best model and a trial needs at least {MIN_TRIAL_S:.0f} s",
                hint=f"set budget.time to at least {math.ceil(reserve + MIN_TRIAL_S + 30)}s",
            )
        finetune = finetune_carve_out(recipe, seconds - reserve)
        return cls(
            started + seconds - reserve - finetune,
            recipe.budget.target_accuracy,
            seconds=seconds,
            reserve=reserve,
            finetune=finetune,
        )

    def no_time_for_trials(self, feature_seconds: float) -> str | None:
        """Why no trial can start now (less than `MIN_TRIAL_S` before the deadline), or None. The search then goes
        on without trials: the LR-CV candidates are selected and exported within the reserve (issue 15: "features
        took too long" is never an error when a model can be exported)."""
        if self.deadline - time.time() >= MIN_TRIAL_S:
            return None
        return (
            f"budget.time: {self.seconds:.0f} s were spent before the first trial (features took "
            f"{feature_seconds:.0f} s; {self.reserve:.0f} s are kept for the export): no trial ran; raise "
            "budget.time, or build the features first with `automl cache build RECIPE`"
        )

    def left(self) -> float:
        """Seconds until the whole budget ends: the trials' deadline, the fine-tuning share, the final reserve."""
        return self.deadline + self.finetune + self.reserve - time.time()

    def finetune_deadline(self) -> float:
        """When the fine-tuning stage starting now must end: its share after the trials' deadline, or after now when
        the trials and the selection ran past it, so whatever the trials left (a trials budget can end them minutes
        early) is its too; never into the second half of the final reserve (the export and test need it, 90 s for
        three fine-tuned backbones with flip averaging on trashnet); no limit without a time budget."""
        if not math.isfinite(self.seconds):
            return math.inf
        return min(max(time.time(), self.deadline) + self.finetune, self.deadline + self.finetune + self.reserve / 2)

    def time_limit(self, trial_time: float | None) -> float:
        """Seconds a trial starting now may train: to the deadline, and at most the recipe's `trial_time`."""
        return max(0.0, min(self.deadline - time.time(), trial_time or math.inf))

    def observe(self, result: Mapping[str, object]) -> None:
        """Note a trial's report: a final one at or above the target ends the search."""
        accuracy = result.get(METRIC)
        target = self.target_accuracy
        if result.get("final") and target is not None and isinstance(accuracy, float) and accuracy >= target:
            self.target_reached = True

    def stop_all(self) -> bool:
        return self.target_reached or time.time() >= self.deadline + STOP_GRACE_S

    def stop_reason(self, counts: TrialCounts, planned: int, trials_budget: int | None) -> StopReason:
        """Which budget ended the search: `target_accuracy`, `trials`, `search_space` (grid done), `time`,
        or `interrupted` (Ctrl-C: none of the budgets explains the end)."""
        if self.target_reached:
            return "target_accuracy"
        if planned > 0 and counts.done + counts.failed >= planned:
            return "trials" if planned == trials_budget else "search_space"
        if time.time() >= self.deadline - 1.0:
            return "time"
        return "interrupted"


def trial_count(recipe: Recipe, space: SearchSpace) -> int:
    """Trials to run: the recipe's budget, capped by the grid's size; -1 (no limit) when neither applies."""
    limits = [recipe.budget.trials] if recipe.budget.trials else []
    if space.grid:
        limits.append(len(space.configurations()))
    return min(limits) if limits else -1
