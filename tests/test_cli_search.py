"""`automl search` / `automl status` refusals that need no Ray: each one exits 2 and names what to fix."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


def test_status_of_a_search_still_extracting_shows_each_backbones_state_rate_and_eta(tmp_path):
    from automl.runs.folder import RunFolder
    from automl.search.features import ExtractionLog

    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    folder.recipe.write_text("data: {folder: animals10}\n")
    log = ExtractionLog(folder.extraction)
    log.update("efficientnet_lite0", state="done", seconds=66.3)
    log.start("efficientnet_lite1", images=5875, estimate_s=None)
    log.advance("efficientnet_lite1", 32)
    log.backbones["efficientnet_lite1"]["rate_since"] = (time.time() - 10.0, 32)  # 10 s ago: a known rate
    log.advance("efficientnet_lite1", 968)
    log.update("efficientnet_lite2", state="skipped", images=5875, reason="estimated 125 s of extraction, 20 s left")

    shown = _automl("status", str(folder.root), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith("features: ")]
    assert lines[0] == "features: efficientnet_lite0 done"
    assert lines[1].startswith("features: efficientnet_lite1 extracting 1000/5875 · 96.") and "ETA 5" in lines[1]
    assert lines[2] == "features: efficientnet_lite2 skipped for time: estimated 125 s of extraction, 20 s left"
    payload = json.loads(_automl("status", str(folder.root), "--json", cwd=tmp_path).stdout)
    assert payload["extraction"]["efficientnet_lite1"]["done"] == 1000
