"""`automl data check`: what a dataset folder holds, how it splits, and every file that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

data_app = typer.Typer(help="Inspect dataset folders (one sub-folder per class).", no_args_is_help=True)

_SHOWN_DUPLICATE_GROUPS = 10


@data_app.command("check")
def check(
    path: Path = typer.Argument(..., help="Dataset folder; a relative path is looked up under $AUTOML_DATA first."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    seed: int = typer.Option(0, "--seed", help="Split seed (as in the recipe's data.seed)."),
    train: float = typer.Option(0.7, "--train", help="Train fraction."),
    val: float = typer.Option(0.15, "--val", help="Validation fraction."),
    test: float = typer.Option(0.15, "--test", help="Test fraction."),
    full: bool = typer.Option(
        True,
        "--full/--fast",
        help="--full decodes every new file (finds truncated ones); --fast reads headers only.",
    ),
    rescan: bool = typer.Option(False, "--rescan", help="Ignore the scan index: re-read every file."),
) -> None:
    """Count classes, splits, duplicates, formats, modes and sizes; list every unusable file. Exit 2 if unusable."""
    from automl.data.check import check_report
    from automl.data.dataset import scan_dataset
    from automl.paths import resolve_dataset

    dataset = scan_dataset(
        resolve_dataset(path),
        train=train,
        val=val,
        test=test,
        seed=seed,
        verify=full,
        progress=True,
        use_index=not rescan,
        allow_unusable=True,
    )
    report = check_report(dataset)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _render(report, full)
    if dataset.problem is not None:
        if not as_json:
            typer.secho(f"error: {dataset.problem}", err=True, fg=typer.colors.RED)
        raise typer.Exit(dataset.problem.exit_code)


def _render(report: dict[str, Any], full: bool) -> None:
    """The report as tables; every name and reason comes from the user's folder, so each is printed escaped."""
    from rich.console import Console
    from rich.table import Table

    from automl.cli.text import safe

    console = Console()
    totals = report["totals"]
    console.print(
        f"[bold]{safe(report['root'])}[/]: {totals['files']} files, {totals['classes']} classes, "
        f"{totals['images']} distinct usable images, {totals['skipped']} skipped"
        + ("" if full else " [yellow](--fast: headers only, truncated files not detected)[/]")
    )
    classes = Table("class", "files", "images", "train", "val", "test", title="Classes and splits")
    for row in report["classes"]:
        classes.add_row(*(safe(row[key]) for key in ("name", "files", "images", "train", "val", "test")))
    splits = report["splits"]
    classes.add_row("[bold]total", "", str(totals["images"]), *(str(splits[s]) for s in ("train", "val", "test")))
    console.print(classes)

    console.print("formats: " + safe(_counts(report["formats"])) + "    modes: " + safe(_counts(report["modes"])))
    width, height = report["size"]["width"], report["size"]["height"]
    console.print(
        f"width min/median/max: {width['min']}/{width['median']}/{width['max']} px, "
        f"height: {height['min']}/{height['median']}/{height['max']} px"
    )
    if report["animated"]:
        console.print(f"animated (first frame used): {len(report['animated'])}")

    groups = report["duplicates"]
    crossing = [group for group in groups if group["crosses_classes"]]
    console.print(
        f"exact-duplicate groups: {len(groups)} ({sum(len(g['paths']) for g in groups)} files, each group counted "
        f"once); crossing classes: [{'red' if crossing else 'green'}]{len(crossing)}[/]"
    )
    for group in (crossing + [g for g in groups if not g["crosses_classes"]])[:_SHOWN_DUPLICATE_GROUPS]:
        where = f"classes {', '.join(group['classes'])}" if group["crosses_classes"] else ", ".join(group["splits"])
        console.print(f"  {safe(' = '.join(group['paths']))}  [dim]({safe(where)})[/]")
    if len(groups) > _SHOWN_DUPLICATE_GROUPS:
        console.print(f"  ... {len(groups) - _SHOWN_DUPLICATE_GROUPS} more (--json lists all)")

    if report["extension_mismatches"]:
        mismatches = Table("file", "extension", "real format", title="Extension does not match content")
        for row in report["extension_mismatches"]:
            mismatches.add_row(safe(row["path"]), safe(row["extension"]), safe(row["format"]))
        console.print(mismatches)
    if report["skipped"]:
        skipped = Table("file", "reason", title="Not used", title_style="bold red")
        for row in report["skipped"]:
            skipped.add_row(safe(row["path"]), safe(row["reason"]))
        console.print(skipped)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/] {safe(warning)}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
