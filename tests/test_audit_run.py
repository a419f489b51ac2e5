"""automl.audit.run and `automl data audit`, on real photos and cached Lite0 pooled vectors.

trashnet's three byte-identical cross-class copies are reported; a copy of animals10 with 5 % of its photos
moved to a wrong class (seeded, symlinks in a temporary folder) has at least 80 % of them in the audit's
top 2 x (number moved), most with their true class suggested.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASETS
from typer.testing import CliRunner

from automl.audit.run import audit_recipe, audit_run
from automl.recipe import load_recipe
from automl.runs import RunFolder

BACKBONE = "efficientnet_lite0"


def write_recipe(path: Path, folder: Path, name: str | None = None, **data: object) -> Path:
    """A recipe on `folder` with Lite0 only and the shared cache (JSON is YAML)."""
    recipe = {
        "name": name or folder.name,
        "data": {"folder": str(folder), **data},
        "search": {"backbones": [BACKBONE]},
    }
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def test_trashnet_cross_class_copies_are_reported_and_the_csv_lists_them(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "trashnet.yaml", DATASETS / "trashnet", max_per_class=40)
    csv_path = tmp_path / "findings.csv"
    result = CliRunner().invoke(_app(), ["data", "audit", str(recipe), "--json", "--write-csv", str(csv_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    copies = {frozenset(Path(p).name for p in copy["paths"]) for copy in report["exact_copies"]}
    assert copies == {
        frozenset({"glass115.jpg", "metal91.jpg"}),
        frozenset({"glass176.jpg", "plastic152.jpg"}),
        frozenset({"glass389.jpg", "plastic332.jpg"}),
    }
    assert report["model"]["source"] == "LR-CV" and report["model"]["oof_accuracy"] > 0.6
    assert report["counts"]["exact_copies_across_classes"] == 3
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    kinds = Counter(row.split(",")[0] for row in rows[1:])
    assert kinds["exact_copy_across_classes"] == 3
    assert kinds["label_issue"] == report["counts"]["label_issues"]
    assert kinds["near_duplicate"] == report["counts"]["near_duplicates"]


def test_photos_moved_to_a_wrong_class_top_the_label_issues(tmp_path: Path) -> None:
    source = DATASETS / "animals10"
    noisy = tmp_path / "animals10-noisy"
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    files = sorted(p for c in classes for p in (source / c).iterdir() if p.is_file())
    from automl.data.dataset import scan_dataset

    clean = scan_dataset(source, train=0.7, val=0.15, test=0.15, seed=0)
    once = Counter(file.sha1 for file in clean.files)
    movable = [r.path for r in clean.records if once[r.sha1] == 1]  # no copy elsewhere: moving makes no conflict
    rng = np.random.default_rng(16)
    moved = {Path(p): classes[(classes.index(Path(p).parent.name) + rng.integers(1, len(classes))) % len(classes)]
             for p in rng.choice(movable, size=round(0.05 * len(clean.records)), replace=False)}  # fmt: skip
    for file in files:
        target = noisy / moved.get(file, file.parent.name) / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(file, target)

    audit = audit_recipe(load_recipe(write_recipe(tmp_path / "noisy.yaml", noisy)))
    truth = {str(noisy / wrong / file.name): file.parent.name for file, wrong in moved.items()}
    top = audit.label_issues[: 2 * len(moved)]
    found = [issue for issue in top if issue.path in truth]
    assert len(found) >= 0.8 * len(moved), f"{len(found)} of {len(moved)} moved photos in the top {len(top)}"
    right = sum(issue.suggested == truth[issue.path] for issue in found)
    assert right >= 0.8 * len(found), f"true class suggested for {right} of {len(found)}"
    assert all(issue.given != issue.suggested for issue in found)


def test_audit_run_writes_audit_json_and_never_fails_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_recipe(run / "recipe.yaml", DATASETS / "animals10", max_per_class=12)
    (run / "summary.json").write_text(json.dumps({"best": {"config": {"backbone": BACKBONE}}}), encoding="utf-8")
    report = json.loads(audit_run(run).read_text(encoding="utf-8"))
    assert report["model"]["backbone"] == BACKBONE and report["photos"] == 120
    assert sum(report["class_counts"].values()) == 120

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "recipe.yaml").write_text("name: x\ndata: {folder: /nonexistent/photos}\n", encoding="utf-8")
    written = json.loads(audit_run(broken).read_text(encoding="utf-8"))
    assert "nonexistent" in written["error"] and RunFolder(broken).audit.is_file()


def test_an_audit_past_its_deadline_stops_extracting_and_says_so(tmp_path: Path) -> None:
    """The end of a search: features the cache lacks (here a fresh cache) are not computed past the budget."""
    run = tmp_path / "run"
    run.mkdir()
    recipe = json.loads(write_recipe(run / "recipe.yaml", DATASETS / "animals10", max_per_class=3).read_text())
    (run / "recipe.yaml").write_text(json.dumps({**recipe, "cache": str(tmp_path / "empty")}), encoding="utf-8")
    written = json.loads(audit_run(run, deadline=0.0).read_text(encoding="utf-8"))
    assert "the time budget ended while extracting efficientnet_lite0's features" in written["error"]


def test_given_probabilities_are_used_as_they_are(tmp_path: Path) -> None:
    """The search passes its own OOF probabilities by SHA-1: photos it judged are audited with those."""
    from automl.data.dataset import scan_dataset

    folder = DATASETS / "animals10"
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", folder, max_per_class=12))
    dataset = scan_dataset(folder, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=12)
    wrong = dataset.records[0]
    probabilities = {r.sha1: np.eye(10)[r.label] * 0.9 + 0.01 for r in dataset.records}
    probabilities[wrong.sha1] = np.eye(10)[(wrong.label + 1) % 10] * 0.9 + 0.01
    audit = audit_recipe(recipe, probabilities=probabilities)
    assert audit.model == {"source": "given", "backbone": BACKBONE, "judged": 120}
    assert [issue.path for issue in audit.label_issues] == [str(wrong.path)]
    assert audit.label_issues[0].suggested == dataset.classes[(wrong.label + 1) % 10]
    with pytest.raises(Exception, match="classes"):
        audit_recipe(recipe, probabilities={wrong.sha1: [0.5, 0.5]})


def _app():
    from automl.cli.main import app

    return app
