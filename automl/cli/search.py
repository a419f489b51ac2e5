"""`automl search RECIPE` and `automl status RUN_DIR`: run a search, and watch or review one."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import typer

from automl.errors import InputError
from automl.runs.trials import TrialRecord, TrialStatus

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
    from automl.search.driver import run_search

    console = Console(stderr=True, soft_wrap=True)
    try:
        outcome = run_search(load_recipe(recipe), resume=resume, address=address, console=console)
    except KeyboardInterrupt:
        console.print(f"interrupted; resume with: automl search {recipe} --resume <the run folder printed above>")
        raise typer.Exit(130) from None
    summary = outcome.summary
    if as_json:
        typer.echo(summary.model_dump_json())
        return
    console.print(
        f"[bold green]done[/bold green] ({summary.stop_reason}) in {summary.wall_seconds or 0:.0f} s: "
        f"{summary.trials.done} trials, {summary.trials.failed} failed"
    )
    best, baseline = summary.best, summary.baseline
    if best is not None:
        interval = best.test_top1_ci95
        spread = f" (95 % interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
        typer.echo(
            f"best: {best.trial}  val {_number(best.val_accuracy)}  test top-1 {_number(best.test_top1)}{spread}"
        )
    if baseline is not None:
        typer.echo(f"baseline (default configuration): val {baseline.val_accuracy:.4f}")
    typer.echo(f"model: {summary.model}")
    if summary.stop_reason == "interrupted":
        typer.echo(f"resume with: automl search {recipe} --resume {summary.run_dir}")


def status(
    run_dir: Path = typer.Argument(..., help="A run folder printed by `automl search`."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON."),
    top: int = typer.Option(TOP_DEFAULT, "--top", min=1, help="Rows of the leaderboard to show."),
) -> None:
    """Leaderboard of a running or finished search: every trial's status, accuracy, time and configuration."""
    from automl.runs import RunFolder, RunFolderError, Summary
    from automl.search.features import describe_extraction, read_extraction
    from automl.search.tune_state import read_trials

    folder = RunFolder(run_dir)
    if not folder.is_run():
        raise InputError(f"{run_dir}: not a search run folder (no recipe.yaml)", hint="pass a folder under runs/")
    try:  # a damaged or foreign run folder (garbage trials.parquet, wrong JSON types) is one clear error
        trials = read_trials(folder)
        summary = Summary.read(folder.summary) if folder.is_finished() else None
        counts = trials.counts()
        shown = trials.trials[:top]
        rows = [_leaderboard_row(rank, trial) for rank, trial in enumerate(shown, start=1)]
    except RunFolderError:
        raise
    except Exception as exc:
        raise InputError(
            f"{run_dir}: damaged run folder, cannot read its trials or summary ({type(exc).__name__}: {exc})",
            hint="trials.parquet or summary.json was truncated or edited; `automl search --resume` rewrites them",
        ) from None
    state = "finished" if summary else "running or stopped"
    extraction = read_extraction(folder.extraction)
    if as_json:
        payload = {
            "run_dir": str(run_dir),
            "state": state,
            "extraction": extraction,
            "counts": asdict(counts),
            "trials": [trial.to_row() for trial in shown],
            "summary": summary.model_dump(mode="json") if summary else None,
        }
        typer.echo(json.dumps(payload, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    from automl.cli.text import plain, safe

    title = f"{run_dir} ({state}): {counts.done} done, {counts.running} running, {counts.failed} failed"
    table = Table(title=safe(title))
    for column in ("#", "val acc", "status", "epochs", "seconds", "trial", "configuration or error"):
        table.add_column(column, justify="right" if column in ("#", "val acc", "epochs", "seconds") else "left")
    for row in rows:
        table.add_row(*(safe(cell) for cell in row))
    Console().print(table)
    for line in describe_extraction(extraction):
        typer.echo(plain(f"features: {line}"))
    if summary:
        typer.echo(plain(f"stop reason: {summary.stop_reason}; model: {summary.model}"))


def _leaderboard_row(rank: int, trial: TrialRecord) -> list[str]:
    """One leaderboard row as text (escaped by the caller: names and errors are untrusted)."""
    detail = trial.error if trial.status == TrialStatus.FAILED else trial.describe()
    return [
        str(rank),
        _number(trial.val_accuracy),
        str(trial.status),
        str(trial.epochs),
        _number(trial.seconds, ".1f"),
        trial.trial_id,
        str(detail),
    ]


def _number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("status")(status)
