"""`automl data check`, run as users run it (`python -m automl`), on the real animals10 and on the odd folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from image_cases import jpeg, odd_dataset

REPO = Path(__file__).resolve().parents[1]


def automl(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "automl", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def check_json(path: Path, cache: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = automl("data", "check", str(path), "--json", *options, cache=cache)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def animals10_report(animals10: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    code, report = check_json(animals10, tmp_path_factory.mktemp("xdg"))
    assert code == 0
    return report


def test_animals10_counts_classes_files_and_modes(animals10_report: dict[str, Any]) -> None:
    report = animals10_report
    assert report["usable"] is True
    assert report["totals"]["classes"] == 10 and len(report["classes"]) == 10
    assert report["totals"]["files"] == 949 and report["totals"]["readable"] == 949
    assert report["modes"]["RGBA"] > 800 and report["formats"]["PNG"] == report["modes"]["RGBA"]
    assert sum(report["splits"].values()) == report["totals"]["images"]
    assert all(row["val"] >= 1 and row["test"] >= 1 for row in report["classes"])
    size = report["size"]["width"]
    assert size["min"] <= size["median"] <= size["max"] <= 288


def test_animals10_duplicates_are_grouped_and_each_group_in_one_split(animals10_report: dict[str, Any]) -> None:
    groups = animals10_report["duplicates"]
    assert len(groups) > 0
    assert not any(group["crosses_classes"] for group in groups)
    assert all(len(group["splits"]) == 1 for group in groups)
    files_in_groups = sum(len(group["paths"]) for group in groups)
    # each group counts once among the distinct images
    assert animals10_report["totals"]["images"] == 949 - files_in_groups + len(groups)


def test_odd_folder_report_names_every_unusable_file(tmp_path: Path) -> None:
    odd = odd_dataset(tmp_path / "odd")
    code, report = check_json(odd.root, tmp_path / "xdg")
    assert code == 0
    reasons = {row["path"]: row["reason"] for row in report["skipped"]}
    for path, word in odd.skipped.items():
        assert word in reasons[path.relative_to(odd.root).as_posix()]
    mismatched = {row["path"]: row["format"] for row in report["extension_mismatches"]}
    assert mismatched == {"cat/png named.jpg": "PNG", "cat/webp named.jpg": "WEBP"}
    assert {"RGBA", "LA", "P", "L", "CMYK", "RGB"} <= set(report["modes"])
    assert report["animated"] == ["cat/animated.gif"]
    assert any(group["crosses_classes"] and group["classes"] == ["cat", "dog"] for group in report["duplicates"])
    assert any("'empty' is empty" in warning for warning in report["warnings"])
    found = [p.relative_to(odd.root).parts for p in odd.root.rglob("*") if p.is_file()]
    visible = [parts for parts in found if len(parts) <= 2 and not parts[0].startswith(".")]  # not in sub-folders
    assert report["totals"]["files"] == len(visible), "each file counts once, also one both read and skipped"


def test_fast_mode_reads_headers_only(tmp_path: Path) -> None:
    odd = odd_dataset(tmp_path / "odd")
    code, report = check_json(odd.root, tmp_path / "xdg", "--fast")
    skipped = {row["path"] for row in report["skipped"]}
    assert code == 0
    assert "cat/truncated.jpg" not in skipped  # documented: truncation needs a decode
    assert "cat/zero.jpg" in skipped and "cat/bomb.png" in skipped


def test_unusable_folder_exits_2_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    for seed in range(3):
        (tmp_path / "only" / f"{seed}.jpg").write_bytes(jpeg(seed))
    human = automl("data", "check", str(tmp_path), cache=tmp_path / "xdg")
    assert human.returncode == 2
    assert "1 usable class (only); a classifier needs at least 2" in human.stderr
    code, report = check_json(tmp_path, tmp_path / "xdg")
    assert code == 2 and report["usable"] is False and "at least 2" in report["problem"]


def test_missing_folder_exits_2(tmp_path: Path) -> None:
    result = automl("data", "check", str(tmp_path / "absent"), cache=tmp_path / "xdg")
    assert result.returncode == 2 and "dataset folder not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_human_output_lists_classes_and_skipped_files(tmp_path: Path) -> None:
    odd = odd_dataset(tmp_path / "odd")
    result = automl("data", "check", str(odd.root), cache=tmp_path / "xdg")
    assert result.returncode == 0
    for text in ("Classes and splits", "Not used", "truncated.jpg", "decompression bomb", "warning:"):
        assert text in result.stdout


@pytest.mark.timeout(120)
def test_links_fifos_and_markup_names_are_reported_never_followed_or_read(tmp_path: Path) -> None:
    """A link to / inside a class is not walked; a link that cannot be stat'ed, a FIFO and a device are
    skipped with their reason; names holding Rich markup and control characters print literally."""
    root = tmp_path / "data"
    for name in ("cats", "dogs["):  # relative paths `dogs[/b]0.jpg`: a closing tag Rich used to crash on
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"b]{i}.jpg").write_bytes(jpeg(seed=10 * len(name) + i))
    (root / "cats" / "everything").symlink_to("/")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "photo.jpg").write_bytes(jpeg(seed=1))
    (root / "cats" / "locked.jpg").symlink_to(locked / "photo.jpg")
    locked.chmod(0)
    os.mkfifo(root / "cats" / "pipe.jpg")
    (root / "dogs[" / "zero.jpg").symlink_to("/dev/zero")
    (root / "dogs[" / "bell\x07.jpg").write_bytes(b"plain text, not a photo")
    try:
        code, report = check_json(root, tmp_path / "cache")
        human = automl("data", "check", str(root), cache=tmp_path / "cache")
    finally:
        locked.chmod(0o755)
    assert code == 0 and report["totals"]["images"] == (7 if os.geteuid() == 0 else 6)  # root reads locked.jpg
    reasons = {row["path"]: row["reason"] for row in report["skipped"]}
    assert "link to a folder inside a class: not followed" in reasons["cats/everything"]
    if os.geteuid() != 0:  # root reads through any permission
        assert "broken or unreadable link (Permission denied)" in reasons["cats/locked.jpg"]
    assert "FIFO" in reasons["cats/pipe.jpg"] and "not read" in reasons["cats/pipe.jpg"]
    assert "not a regular file" in reasons["dogs[/zero.jpg"]
    assert human.returncode == 0, human.stderr
    assert "Traceback" not in human.stderr and "MarkupError" not in human.stderr
    assert "dogs[/b]0.jpg" in human.stdout or "dogs[" in human.stdout
    assert "bell\\x07.jpg" in human.stdout and "\x07" not in human.stdout


@pytest.mark.parametrize("folder", ["/", "/proc", "/sys/class", "/tmp/../dev"])
def test_system_folders_are_refused_before_a_scan(folder: str, tmp_path: Path) -> None:
    result = automl("data", "check", folder, cache=tmp_path)
    assert result.returncode == 2 and "a system folder, not a dataset" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
