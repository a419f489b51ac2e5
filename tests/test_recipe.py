"""Recipes: defaults, duration parsing, and errors that name file:line, key and allowed values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from automl.errors import RecipeError
from automl.recipe import load_recipe, parse_duration, parse_recipe

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "automl", *args], capture_output=True, text=True)


def test_minimal_recipe_is_three_lines_and_fills_every_default(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text("# the smallest recipe\ndata:\n  folder: animals10\n")
    recipe = load_recipe(path)
    assert recipe.name == "tiny"
    assert recipe.search.cuts == ["all"]
    assert recipe.budget.time == 600.0
    assert recipe.resources.address is None


@pytest.mark.parametrize(
    ("text", "seconds"), [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), (None, None)]
)
def test_durations(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_single_value_fixes_a_dimension() -> None:
    recipe = parse_recipe("data: {folder: x}\nsearch:\n  heads: svm\n  learning_rate: 0.01\n")
    assert recipe.search.heads == ["svm"]
    assert recipe.search.learning_rate.fixed and recipe.search.learning_rate.low == 0.01


def test_invalid_recipe_names_file_line_key_and_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "data:\n"
        "  folder: animals10\n"
        "  colour: red\n"  # unknown key, line 3
        "search:\n"
        "  heads: [softmax, sofmax]\n"  # bad choice, line 5
        "  epochs: many\n"  # wrong type, line 6
        "budget:\n"
        "  time: ten minutes\n"  # bad duration, line 8
    )
    result = run_cli("recipe", "check", str(path))
    assert result.returncode == 2
    err = result.stderr
    assert f"{path}:3: data.colour: unknown key" in err and "max_per_class" in err
    assert f"{path}:5: search.heads[1]: 'sofmax' is not allowed" in err and "'svm'" in err
    assert f"{path}:6: search.epochs:" in err
    assert f"{path}:8: budget.time:" in err and "10m" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("search: {momentum: 1.5}", "search.momentum", "[0, 1)"),
        ("search: {dropout: [0.2, 1.5]}", "search.dropout[1]", "less than 1"),
        ("search: {batch_size: 0}", "search.batch_size[0]", "greater than 0"),
        ("search: {mlp_hidden: -1}", "search.mlp_hidden[0]", "greater than 0"),
        ("search: {learning_rate: 0}", "search.learning_rate", "must be > 0"),
        ("search: {epsilon: {low: 0, high: 1}}", "search.epsilon", "log-scale range needs low > 0"),
        ("budget: {time: 0s}", "budget.time", "must be positive"),
        ("budget: {trial_time: -1}", "budget.trial_time", "must be positive"),
        ("name: ../../elsewhere", "name", "plain folder name"),
        ("cache: s3://bucket/bottlenecks", "cache", "URLs are not supported"),
    ],
)
def test_values_training_would_refuse_are_refused_by_the_recipe(line: str, key: str, message: str) -> None:
    """Caught at `recipe check`, naming the key, rather than after feature extraction in every trial."""
    with pytest.raises(RecipeError) as caught:
        parse_recipe(f"data: {{folder: x}}\n{line}\n", source="r.yaml")
    assert f"r.yaml:2: {key}: " in str(caught.value) and message in str(caught.value)
    assert caught.value.hint


def test_plain_sgd_and_linear_ranges_from_zero_are_allowed() -> None:
    recipe = parse_recipe("data: {folder: x}\nsearch:\n  momentum: {low: 0, high: 0.9, log: false}\n")
    assert (recipe.search.momentum.low, recipe.search.momentum.high) == (0, 0.9)
    assert parse_recipe("data: {folder: x}\nsearch: {momentum: 0}\n").search.momentum.fixed


def test_yaml_syntax_error_and_missing_data_section(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"x.yaml:\d+: not valid YAML"):
        parse_recipe("data:\n  folder: [unclosed\n", source="x.yaml")
    with pytest.raises(RecipeError, match=r"x.yaml:1: data: required key is missing"):
        parse_recipe("search: {}\n", source="x.yaml")


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(RecipeError):
        parse_recipe("data: !!python/object/apply:os.system ['echo pwned']\n")


def test_schema_is_json_and_forbids_unknown_keys() -> None:
    result = run_cli("recipe", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"data", "search", "budget", "resources", "output"} <= set(schema["properties"])


def test_shipped_recipes_validate() -> None:
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ must hold at least the quick-start recipe"
    for path in recipes:
        result = run_cli("recipe", "check", str(path))
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "data: {folder: a}\nsearch:\n  epochs: 3\n  epochs: 5\n",
            r"r.yaml:4: key 'epochs' appears twice \(first on line 3\)",
        ),
        ("data: {folder: a}\ndata: {folder: b}\n", r"r.yaml:2: key 'data' appears twice"),
        ("data: {folder: a}\nx: " + "[" * 5000 + "]" * 5000 + "\n", r"r.yaml:2: nested more than 20 levels deep"),
        ("data: {folder: a}\n" + "".join("  " * i + f"k{i}:\n" for i in range(40)), r"nested more than 20 levels"),
        ("data: {folder: a}\nsearch: {seed: -5}\n", r"search.seed: Input should be greater than or equal to 0"),
        (
            "data: {folder: a, seed: 81129638414606681695789005144064}\n",
            r"data.seed: .*less than or equal to 4294967295",
        ),
        ("data: {folder: a}\nbudget: {time: .nan}\n", r"budget.time: nan is not a duration"),
        ("data: {folder: a}\nbudget: {trial_time: .inf}\n", r"budget.trial_time: inf is not a duration"),
        (
            "data: {folder: a}\nsearch: {learning_rate: .inf}\n",
            r"search.learning_rate.low: Input should be a finite number",
        ),
        (
            "data: {folder: a}\nsearch: {svm_c: {low: .nan, high: 1}}\n",
            r"search.svm_c.low: Input should be a finite number",
        ),
        ("data: {folder: /}\n", r"data.folder: '/' is a system folder"),
        ("data: {folder: /proc}\n", r"data.folder: '/proc' is a system folder"),
        ("data: {folder: /sys/class/net}\n", r"data.folder: '/sys/class/net' is a system folder"),
        ("data: {folder: /tmp/../dev/}\n", r"data.folder: '/tmp/../dev/' is a system folder"),
    ],
)
def test_hostile_or_careless_recipes_get_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text, source="r.yaml")


def test_a_recipe_that_is_not_utf8_is_refused_with_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: x\ndata: {folder: caf\xe9}\n".encode("latin-1"))
    result = run_cli("recipe", "check", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{recipe}:2: not UTF-8 text (byte 0xe9 at offset 26)" in result.stderr


def test_a_fifo_given_as_a_recipe_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "recipe.yaml")
    with pytest.raises(RecipeError, match=r"not a regular file \(a FIFO"):
        load_recipe(tmp_path / "recipe.yaml")
