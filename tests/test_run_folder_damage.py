"""A damaged or hostile run folder given to `automl status` and `automl report`: one clear error, no traceback;
and the report reads photos only inside the run folder and its dataset, as regular files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from automl.report.page import load_run, misclassified_section


def automl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "automl", *args], capture_output=True, text=True, timeout=120)


def run_folder(tmp_path: Path, data: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(f"name: r\ndata: {{folder: {data}}}\n")
    return run


@pytest.mark.parametrize(
    "damage",
    ["garbage parquet", "empty parquet", "missing columns", "summary is a list"],
)
def test_status_and_report_on_a_damaged_run_folder_give_one_clear_error(
    tmp_path: Path, animals10: Path, damage: str
) -> None:
    run = run_folder(tmp_path, animals10)
    trials = run / "trials.parquet"
    if damage == "garbage parquet":
        trials.write_bytes(os.urandom(4096))
    elif damage == "empty parquet":
        trials.write_bytes(b"")
    elif damage == "missing columns":
        pd.DataFrame({"something": [1, 2]}).to_parquet(trials, engine="fastparquet")
    else:
        pd.DataFrame({"trial_id": ["t1"], "status": ["complete"], "val_accuracy": [0.5], "seconds": [1.0]}).to_parquet(
            trials, engine="fastparquet"
        )
        (run / "summary.json").write_text("[1, 2, 3]")
    for command in ("status", "report"):
        result = automl(command, str(run))
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode != 0:
            assert result.returncode == 2, result.stderr
            # the folder, or better the very file, is named with what is wrong
            assert f"error: {run}: damaged run folder" in result.stderr or (
                f"error: {run}/" in result.stderr and "not a readable" in result.stderr
            ), result.stderr


@pytest.mark.timeout(120)  # a FIFO read would hang the report forever
def test_the_report_embeds_only_photos_of_its_run_and_dataset(tmp_path: Path, animals10: Path) -> None:
    inside = sorted((animals10 / "cat").iterdir())[0]
    outside = tmp_path / "private" / "secret.jpg"
    outside.parent.mkdir()
    shutil.copy(inside, outside)
    os.mkfifo(tmp_path / "pipe.jpg")
    run = run_folder(tmp_path, animals10)
    wrong = [
        {"file": str(path), "true": "cat", "predicted": "dog", "score": 0.9}
        for path in (inside, outside, tmp_path / "pipe.jpg", Path("/dev/zero"), run / ".." / "private" / "secret.jpg")
    ]
    (run / "metrics.json").write_text(json.dumps({"misclassified": wrong}))
    html = misclassified_section(load_run(run))
    assert html.count("data:image/jpeg;base64,") == 1
    assert "showing 1 (4 not shown: unreadable now, or outside the run folder and its dataset)" in html
