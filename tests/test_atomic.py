"""Atomic writes (`automl.atomic`): files and folders appear whole or not at all, and leave no temporary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from automl.atomic import staging_folder, write_atomic


def test_write_atomic_uses_a_fresh_temporary_each_time_and_leaves_none_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.json, report.html and the TFLite files go through it: two writers must not share a temporary."""
    target = tmp_path / "metrics.json"
    temporaries: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: temporaries.append(os.fspath(src)) or real_replace(src, dst))
    write_atomic(target, '{"top1": 1}')
    write_atomic(target, b'{"top1": 0.5}')

    assert target.read_bytes() == b'{"top1": 0.5}'
    assert len(set(temporaries)) == 2, "each write has its own temporary name"
    blocked = tmp_path / "report.html"
    (blocked / "inside").mkdir(parents=True)  # a folder in the way: the rename fails
    with pytest.raises(OSError):
        write_atomic(blocked, "<html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.html"], "no temporary left"


def test_staging_folder_keeps_the_old_folder_whole_until_the_new_one_is_complete(tmp_path: Path) -> None:
    model = tmp_path / "model"
    with staging_folder(model) as staging:
        (staging / "model.keras").write_text("first")
    assert (model / "model.keras").read_text() == "first"

    with pytest.raises(RuntimeError), staging_folder(model) as staging:
        (staging / "model.keras").write_text("half")
        raise RuntimeError("the writer died")
    assert (model / "model.keras").read_text() == "first", "a failed write leaves the old folder as it was"

    with staging_folder(model) as staging:
        (staging / "model.keras").write_text("second")
    assert (model / "model.keras").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no staging or retired folder left"
