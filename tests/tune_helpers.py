"""Running the Tune experiment directly (no photos, no CLI) for the trial tests; Ray is conftest's `local_ray`."""

from __future__ import annotations

import time
from pathlib import Path

from automl.recipe import Recipe, parse_recipe
from automl.search.budget import SearchBudget
from automl.search.features import FeatureSet
from automl.search.space import build_space
from automl.search.tuner import run_trials


def tune_recipe(tmp_path: Path, search: str, budget: str) -> Recipe:
    """A recipe with these `search:` and `budget:` mappings; its data folder is never read (features are given)."""
    return parse_recipe(
        f"data: {{folder: unused}}\nsearch: {search}\nbudget: {budget}\noutput: {{folder: {tmp_path}}}\n"
    )


def run_tune(tmp_path: Path, recipe: Recipe, features: FeatureSet, budget: SearchBudget | None = None) -> Path:
    """Run `recipe`'s trials on every backbone in `features` (cut `all`) into a fresh run folder; that folder.

    Without `budget`, an hour's deadline and no target: the recipe's trial count ends the search.
    """
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    budget = budget or SearchBudget(deadline=time.time() + 3600, target_accuracy=None)
    space = build_space(recipe.search, {key.split("/")[0]: ["all"] for key in features.arrays})
    run_trials(recipe, space, features, run_dir, budget, resume=False)
    return run_dir
