"""The search's budgets (`automl.search.budget`): refused up front when too short, and which one ended a search."""

from __future__ import annotations

import time

import pytest

from automl.errors import RecipeError
from automl.recipe import parse_recipe
from automl.runs import TrialCounts
from automl.search.budget import MIN_TRIAL_S, STOP_GRACE_S, SearchBudget, final_reserve


def _recipe(budget: str):
    return parse_recipe(f"data: {{folder: unused}}\nbudget: {budget}\n")


def test_the_deadline_keeps_the_final_reserve_and_a_too_short_budget_is_refused() -> None:
    started = time.time()
    budget = SearchBudget.start(_recipe("{time: 10m, target_accuracy: 0.9}"), started)
    assert budget.deadline == pytest.approx(started + 600 - final_reserve(600)) and final_reserve(600) == 90
    assert budget.time_limit(30.0) == 30.0 and budget.time_limit(None) == pytest.approx(
        budget.deadline - time.time(), abs=1
    )
    with pytest.raises(RecipeError, match=r"budget\.time: 50 s cannot fit one trial"):
        SearchBudget.start(_recipe("{time: 50s}"), started)
    late = SearchBudget.start(_recipe("{time: 2m}"), started - 100)
    reason = late.no_time_for_trials(feature_seconds=95.0)
    assert reason is not None and "spent before the first trial" in reason and "no trial ran" in reason
    assert late.deadline - time.time() < MIN_TRIAL_S and budget.no_time_for_trials(1.0) is None
    assert budget.left() == pytest.approx(started + 600 - time.time(), abs=1), "the trials' deadline + the reserve"
    shared = SearchBudget.start(
        parse_recipe("data: {folder: x}\nsearch: {cuts: [all, top]}\nbudget: {time: 10m}\n"), started
    )
    assert shared.finetune == 150.0
    assert shared.left() == pytest.approx(started + 600 - time.time(), abs=1), "the fine-tuning share is still ahead"


def test_the_target_stops_all_and_the_stop_reason_names_the_budget() -> None:
    budget = SearchBudget(deadline=time.time() + 3600, target_accuracy=0.9)
    budget.observe({"val_accuracy": 0.95, "final": False})
    assert not budget.stop_all(), "an epoch's report is no finished trial"
    budget.observe({"val_accuracy": 0.95, "final": True})
    assert budget.stop_all() and budget.stop_reason(TrialCounts(), 10, 10) == "target_accuracy"

    open_ended = SearchBudget(deadline=time.time() + 3600, target_accuracy=None)
    assert open_ended.stop_reason(TrialCounts(done=9, failed=1), 10, 10) == "trials"
    assert open_ended.stop_reason(TrialCounts(done=6), 6, 200) == "search_space", "a grid smaller than the budget"
    assert open_ended.stop_reason(TrialCounts(done=3), 10, 10) == "interrupted"
    past = SearchBudget(deadline=time.time() - 1, target_accuracy=None)
    assert past.stop_reason(TrialCounts(done=3), 10, 10) == "time"
    assert not past.stop_all() and SearchBudget(time.time() - STOP_GRACE_S - 1, None).stop_all()


def test_a_fine_tuning_share_too_small_to_start_the_stage_stays_with_the_trials() -> None:
    from automl.recipe import Recipe
    from automl.search.budget import MIN_FINETUNE_S, SearchBudget

    def budget(time: str) -> SearchBudget:
        search = {"cuts": ["all", "top"], "finetune_share": 0.25}
        return SearchBudget.start(
            Recipe.model_validate({"data": {"folder": "x"}, "search": search, "budget": {"time": time}}), 0.0
        )

    short = budget("3m")  # 45 s would be carved out and then left idle: the stage needs MIN_FINETUNE_S
    assert MIN_FINETUNE_S > 0.25 * 180 and short.finetune == 0.0
    assert short.deadline == 180 - short.reserve, "the trials keep the whole budget but the reserve"
    assert budget("5m").finetune == 75.0
