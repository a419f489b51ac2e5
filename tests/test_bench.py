"""`automl bench --json` on a real run: every phase timed, numbers that hang together."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from automl.cli.main import app
from automl.recipe import load_recipe


@pytest.mark.slow
def test_bench_command_times_every_phase(built_run) -> None:
    args = ["bench", str(built_run.recipe), "--model", str(built_run.root), "--images", "8", "--runs", "5"]
    result = CliRunner().invoke(app, [*args, "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    bench = json.loads(result.stdout)
    assert bench["decode"]["images"] == 8 and bench["decode"]["ms_per_image"] > 0
    assert bench["decode"]["images_per_s"] == pytest.approx(1000 / bench["decode"]["ms_per_image"])
    assert bench["bottleneck"]["batch"] == 8 and bench["bottleneck"]["ms_per_image"] > 0
    heads = bench["training"]["heads"]
    assert list(heads) == list(load_recipe(built_run.recipe).search.heads)
    assert all(h["epoch_seconds"] > 0 and h["epochs_timed"] == 1 for h in heads.values())
    inference = bench["inference"]
    assert inference["model"] == str(built_run.root) and inference["latency_ms"]["runs"] == 5
    assert 0 < inference["latency_ms"]["p50"] <= inference["latency_ms"]["p95"]
    assert inference["throughput_images_per_s"] > 0 and inference["batch"] == 8
    assert bench["machine"]["cores"] >= 1 and "keras" in bench["machine"]["libraries"]
