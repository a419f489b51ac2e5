"""`automl search RECIPE` and `automl status RUN_DIR`: run a search, and watch or review one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from automl.errors import InputError

TOP_DEFAULT = 15


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

    Prints the run folder, the Ray dashboard and the `optuna-dashboard` command for the search's study first
    (and its MLflow run when MLFLOW_TRACKING_URI is set), a live progress line while trials run, and the
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
    trials = read_trials(run_dir)
    summary = json.loads(layout.summary.read_text()) if layout.summary.is_file() else None
    state = "finished" if summary else "running or stopped"
    if as_json:
        rows = [] if trials.empty else json.loads(trials.head(top).to_json(orient="records"))  # NaN -> null
        payload = {
            "run_dir": str(run_dir),
            "state": state,
            "counts": counts(trials),
            "trials": rows,
            "summary": summary,
        }
        typer.echo(json.dumps(payload))
        return
    from rich.console import Console
    from rich.table import Table

    n = counts(trials)
    table = Table(title=f"{run_dir} ({state}): {n['done']} done, {n['running']} running, {n['failed']} failed")
    for column in ("#", "val acc", "status", "epochs", "seconds", "trial", "configuration or error"):
        table.add_column(column, justify="right" if column in ("#", "val acc", "epochs", "seconds") else "left")
    for rank, (_index, row) in enumerate(trials.head(top).iterrows(), start=1):
        detail = row["error"] if row["status"] == "failed" else describe_config(row)
        table.add_row(
            str(rank),
            _number(row["val_accuracy"]),
            row["status"],
            str(row["epochs"]),
            _number(row["seconds"], ".1f"),
            row["trial_id"],
            detail,
        )
    Console().print(table)
    if summary:
        typer.echo(f"stop reason: {summary['stop_reason']}; model: {summary['model']}")


def _number(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("status")(status)
