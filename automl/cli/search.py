"""`automl search RECIPE` and `automl status RUN_DIR`: run a search, and watch or review one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from automl.data.files import read_bounded
from automl.errors import InputError

TOP_DEFAULT = 15
MAX_SUMMARY_BYTES = 64 * 1024**2


def search(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (see recipes/animals10.yaml)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the search in this run folder (after Ctrl-C or a killed driver)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to run on (default: $RAY_ADDRESS, the recipe's, else local Ray)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary at the end (progress goes to stderr)."),
) -> None:
    """Search for the best transfer-learning classifier within the recipe's budgets and export it.

    Prints the run folder and the Ray dashboard first, a live progress line while trials run, and the
    best model's test metrics at the end. Exit code 0 when a model was exported, 2 for a bad recipe or
    dataset, 1 for anything else.
    """
    from rich.console import Console

    from automl.recipe import load_recipe
    from automl.search.run import run_search

    console = Console(stderr=True, soft_wrap=True)
    try:
        outcome = run_search(load_recipe(recipe), resume=resume, address=address, console=console)
    except KeyboardInterrupt:
        console.print(f"interrupted; resume with: automl search {recipe} --resume <the run folder printed above>")
        raise typer.Exit(130) from None
    summary = outcome.summary
    if as_json:
        typer.echo(json.dumps(summary))
        return
    best = summary["best"]
    console.print(
        f"[bold green]done[/bold green] ({summary['stop_reason']}) in {summary['wall_seconds']:.0f} s: "
        f"{summary['trials']['done']} trials, {summary['trials']['failed']} failed"
    )
    interval = best.get("test_top1_ci95")
    spread = f" (95 % interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    test = _number(best["test_top1"])
    typer.echo(f"best: {best['trial']}  val {best['val_accuracy']:.4f}  test top-1 {test}{spread}")
    typer.echo(f"baseline (default configuration): val {summary['baseline']['val_accuracy']:.4f}")
    typer.echo(f"model: {summary['model']}")
    if summary["stop_reason"] == "interrupted":
        typer.echo(f"resume with: automl search {recipe} --resume {summary['run_dir']}")


def status(
    run_dir: Path = typer.Argument(..., help="A run folder printed by `automl search`."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON."),
    top: int = typer.Option(TOP_DEFAULT, "--top", min=1, help="Rows of the leaderboard to show."),
) -> None:
    """Leaderboard of a running or finished search: every trial's status, accuracy, time and configuration."""
    from automl.search.layout import RunLayout
    from automl.search.leaderboard import counts, describe_config, read_trials

    layout = RunLayout(run_dir)
    if not layout.recipe.is_file():
        raise InputError(f"{run_dir}: not a search run folder (no recipe.yaml)", hint="pass a folder under runs/")
    try:  # a damaged or foreign run folder (garbage trials.parquet, wrong JSON types) is a clear error
        trials = read_trials(run_dir)
        summary = json.loads(read_bounded(layout.summary, MAX_SUMMARY_BYTES)) if layout.summary.exists() else None
        if summary is not None and not isinstance(summary, dict):
            raise TypeError(f"summary.json holds a {type(summary).__name__}, not an object")
        state = "finished" if summary else "running or stopped"
        n = counts(trials)
        rows = _leaderboard_rows(trials, top, describe_config)
    except Exception as exc:
        raise InputError(
            f"{run_dir}: damaged run folder, cannot read its trials or summary ({type(exc).__name__}: {exc})",
            hint="trials.parquet or summary.json was truncated or edited; `automl search --resume` rewrites them",
        ) from None
    if as_json:
        records = [] if trials.empty else json.loads(trials.head(top).to_json(orient="records"))  # NaN -> null
        payload = {"run_dir": str(run_dir), "state": state, "counts": n, "trials": records, "summary": summary}
        typer.echo(json.dumps(payload))
        return
    from rich.console import Console
    from rich.table import Table

    from automl.cli.text import plain, safe

    table = Table(title=safe(f"{run_dir} ({state}): {n['done']} done, {n['running']} running, {n['failed']} failed"))
    for column in ("#", "val acc", "status", "epochs", "seconds", "trial", "configuration or error"):
        table.add_column(column, justify="right" if column in ("#", "val acc", "epochs", "seconds") else "left")
    for row in rows:
        table.add_row(*(safe(cell) for cell in row))
    Console().print(table)
    if summary:
        typer.echo(plain(f"stop reason: {summary.get('stop_reason')}; model: {summary.get('model')}"))


def _leaderboard_rows(trials: Any, top: int, describe_config: Any) -> list[list[str]]:
    """The table's cells, as text: raises on missing columns or wrong types (the caller names the folder)."""
    rows = []
    for rank, (_index, row) in enumerate(trials.head(top).iterrows(), start=1):
        detail = row["error"] if row["status"] == "failed" else describe_config(row)
        rows.append(
            [
                str(rank),
                _number(row["val_accuracy"]),
                str(row["status"]),
                str(row["epochs"]),
                _number(row["seconds"], ".1f"),
                str(row["trial_id"]),
                str(detail),
            ]
        )
    return rows


def _number(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("status")(status)
