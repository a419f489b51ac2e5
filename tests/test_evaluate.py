"""Metrics by hand on tiny cases, then `automl evaluate` and `automl predict` on a real exported model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from automl.cli.main import app
from automl.errors import InputError
from automl.metrics import classification_metrics, wilson_interval

LABELS = ["cat", "dog", "owl"]
# three cats (two right), two dogs (one taken for a cat), one owl (right); owl never confused
Y_TRUE = [0, 0, 0, 1, 1, 2]
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],  # cat -> dog, cat is second
        [0.1, 0.8, 0.1],
        [0.5, 0.1, 0.4],  # dog -> cat, dog is last: outside a top-2
        [0.1, 0.2, 0.7],
    ]
)


def test_metrics_match_a_hand_computed_case() -> None:
    m = classification_metrics(Y_TRUE, PROBS, LABELS, internal_classes=["cat", "dog"], top_k=2)
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(5 / 6)  # top-2 here
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    cat, dog, owl = m["per_class"]
    assert (cat["accuracy"], cat["precision"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (dog["recall"], dog["precision"], dog["f1"]) == (0.5, 0.5, 0.5)
    assert owl["f1"] == 1.0 and owl["internal"] is False
    assert m["histogram"]["counts"] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 1]  # 50 %, 66.7 %, 100 %
    assert m["confused_pairs"][0] == {"true": "cat", "predicted": "dog", "count": 1, "rate": pytest.approx(1 / 3)}
    assert m["internal"]["n"] == 5 and m["internal"]["top1"] == pytest.approx(3 / 5)
    assert m["external"] == {"classes": ["owl"], "n": 1, "top1": 1.0, "top5": 1.0, "mean_class_accuracy": 1.0}


@pytest.mark.parametrize(("hits", "n"), [(104, 108), (108, 108), (0, 12), (4, 6), (1, 1)])
def test_the_accuracy_interval_is_scipys_wilson_interval(hits: int, n: int) -> None:
    from scipy.stats import binomtest

    reference = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(hits, n) == (pytest.approx(reference.low, abs=1e-4), pytest.approx(reference.high, abs=1e-4))


def test_metrics_carry_the_interval_of_their_accuracies() -> None:
    m = classification_metrics(Y_TRUE, PROBS, LABELS, top_k=2)
    assert m["top1_ci95"] == list(wilson_interval(4, 6)) and m["top5_ci95"] == list(wilson_interval(5, 6))
    assert m["top1_ci95"][0] < m["top1"] < m["top1_ci95"][1]


def test_metrics_refuse_mismatched_shapes_and_unknown_internal_classes() -> None:
    with pytest.raises(InputError, match="expected \\(6, 2\\)"):
        classification_metrics(Y_TRUE, PROBS, LABELS[:2])
    with pytest.raises(InputError, match="not among the labels: zebra"):
        classification_metrics(Y_TRUE, PROBS, LABELS, internal_classes=["zebra"])


def _consistent(m: dict) -> None:
    """What must hold for any evaluation: the checks the studies' tables imply."""
    confusion = np.array(m["confusion"])
    supports = [row["support"] for row in m["per_class"]]
    assert m["top5"] >= m["top1"]
    assert confusion.sum(axis=1).tolist() == supports and confusion.sum() == m["n"]
    assert sum(m["histogram"]["counts"]) == sum(1 for s in supports if s)
    assert m["top1"] == pytest.approx(np.trace(confusion) / m["n"])
    assert len(m["misclassified"]) == m["n"] - np.trace(confusion)


def test_metrics_json_of_the_run_is_consistent(exported_run: Path) -> None:
    metrics = json.loads((exported_run / "metrics.json").read_text())
    _consistent(metrics)
    assert metrics["split"] == "test" and metrics["skipped"] == []
    assert set(metrics["internal"]["classes"]) | set(metrics["external"]["classes"]) == set(metrics["labels"])


def test_evaluate_command_reproduces_the_test_metrics(exported_run: Path, animals10: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(exported_run), str(animals10), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    _consistent(evaluated)
    saved = json.loads((exported_run / "metrics.json").read_text())
    assert evaluated["n"] == saved["n"] and evaluated["confusion"] == saved["confusion"]
    assert evaluated["internal"]["classes"] == saved["internal"]["classes"], "internal classes come from the model"


def test_evaluate_command_refuses_classes_the_model_does_not_know(
    exported_run: Path, natural_images: Path, tmp_path: Path
) -> None:
    for name in ("airplane", "cat"):
        (tmp_path / name).mkdir()
        for photo in sorted((natural_images / name).iterdir())[:3]:
            shutil.copy(photo, tmp_path / name)
    result = CliRunner().invoke(app, ["evaluate", str(exported_run), str(tmp_path)])
    assert isinstance(result.exception, InputError) and result.exception.exit_code == 2  # main() exits 2
    assert "classes the model does not know: airplane" in str(result.exception)


def test_predict_command_json_reports_each_broken_file_and_fails_only_if_all_do(
    exported_run: Path, animals10: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    photos = [str(next((animals10 / name).iterdir())) for name in ("bear", "cat", "cow", "dog", "spider")]
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(exported_run), *photos, str(broken), "--top", "5", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["file"] for r in payload["results"]] == photos
    assert all(len(r["labels"]) == 5 for r in payload["results"])
    assert payload["errors"] == [{"file": str(broken), "error": payload["errors"][0]["error"]}]
    assert payload["errors"][0]["error"].startswith("not an image")

    only_broken = runner.invoke(app, ["predict", str(exported_run), str(broken), "--json"])
    assert only_broken.exit_code == 1
    assert json.loads(only_broken.stdout)["results"] == []
