"""`automl curve` on the warm bottleneck cache of a real run: shapes and the statistics of each point."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from automl.cli.main import app
from automl.curve import parse_shots
from automl.errors import InputError


def test_parse_shots_accepts_numbers_and_all_and_names_a_bad_item() -> None:
    assert parse_shots("1, 3,10,all") == [1, 3, 10, "all"]
    with pytest.raises(InputError, match="'0' is not a positive"):
        parse_shots("1,0")
    with pytest.raises(InputError, match="'ten'"):
        parse_shots("ten")


def test_curve_command_gives_consistent_points_and_a_plot(built_run, tmp_path) -> None:
    plot = tmp_path / "curve.png"
    args = ["curve", str(built_run.recipe), "--shots", "1,3,all", "--repeats", "3", "--plot", str(plot), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert curve["cache_computed"] == 0, "the run's cache is warm: nothing goes through the backbone again"
    train_per_class = [len([r for r in built_run.dataset.split("train") if r.label == c]) for c in range(10)]
    assert [p["shots"] for p in curve["points"]] == [1, 3, "all"]
    for point in curve["points"]:
        expected_repeats = 1 if point["shots"] == "all" else 3
        assert point["repeats"] == expected_repeats and len(point["top1"]["values"]) == expected_repeats
        for metric in ("top1", "top5"):
            stats = point[metric]
            assert 0 <= stats["low"] <= stats["mean"] <= stats["high"] <= 1
        assert all(t5 >= t1 for t1, t5 in zip(point["top1"]["values"], point["top5"]["values"], strict=True))
    one, _, everything = curve["points"]
    assert one["images_per_class"] == {"min": 1, "max": 1}
    assert everything["images_per_class"] == {"min": min(train_per_class), "max": max(train_per_class)}
    assert everything["top1"]["mean"] > one["top1"]["mean"], "all training photos must beat one per class"
    assert curve["test_images"] == len(built_run.dataset.split("test"))
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300
