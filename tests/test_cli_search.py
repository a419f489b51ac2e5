"""`automl search` / `automl status` refusals that need no Ray: each one exits 2 and names what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _automl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "automl", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_a_budget_that_cannot_fit_one_trial_is_refused_before_anything_starts(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"data: {{folder: animals10}}\nbudget: {{time: 30s}}\noutput: {{folder: {tmp_path / 'runs'}}}\n")
    result = _automl("search", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    assert "budget.time: 30 s cannot fit one trial" in result.stderr and "set budget.time to at least" in result.stderr
    assert not (tmp_path / "runs").exists(), "no run folder for a refused search"


def test_resume_refuses_a_folder_that_is_not_a_search_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{folder: animals10}}\noutput: {{folder: {tmp_path / 'runs'}}}\n")
    result = _automl("search", str(recipe), "--resume", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a search run folder with trials to resume" in result.stderr


def test_status_refuses_a_folder_that_is_not_a_search_run(tmp_path):
    result = _automl("status", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a search run folder" in result.stderr
