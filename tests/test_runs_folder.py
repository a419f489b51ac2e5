"""Run folders (`automl.runs.folder`): what makes a folder a run, and the newest run of a recipe."""

from __future__ import annotations

import os
from pathlib import Path

from automl.runs import RunFolder, latest


def _run(root: Path, *, model: bool, mtime: float) -> RunFolder:
    folder = RunFolder(root)
    root.mkdir(parents=True)
    folder.recipe.write_text("data: {folder: x}\n", encoding="utf-8")
    if model:
        folder.model.mkdir()
    os.utime(root, (mtime, mtime))
    return folder


def test_the_newest_run_of_a_recipe_is_found_and_folders_without_a_recipe_are_no_runs(tmp_path: Path) -> None:
    old = _run(tmp_path / "animals10-20261101-100000", model=True, mtime=1_000)
    newer = _run(tmp_path / "animals10-20261102-100000", model=False, mtime=2_000)
    (tmp_path / "animals10-stray").mkdir()  # no recipe.yaml: not a run
    _run(tmp_path / "other-20261103-100000", model=True, mtime=3_000)

    assert latest(tmp_path, "animals10") == newer
    assert latest(tmp_path, "animals10", with_model=True) == old
    assert latest(tmp_path, "missing") is None
    assert not RunFolder(tmp_path / "animals10-stray").is_run() and not newer.is_finished()


def test_a_new_run_folder_is_named_by_recipe_and_time(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "runs", "animals10")
    assert folder.root.is_dir() and folder.root.name.startswith("animals10-") and folder.root.is_absolute()
    assert not folder.is_run(), "a run once its recipe is written"
