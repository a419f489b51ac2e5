"""`automl data check`: what a dataset folder holds, how it splits, and every file that cannot be used;
`automl data audit`: likely label errors, near-duplicates (leaks), outliers and imbalance of a recipe's dataset."""

from __future__ import annotations

import json
import os
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


_SHOWN_FINDINGS = 15


@data_app.command("audit")
def audit(
    recipe: Path = typer.Argument(..., help="Recipe YAML file: its data folder, split, backbones and cache."),
    as_json: bool = typer.Option(False, "--json", help="Print every finding as JSON."),
    write_csv: Path | None = typer.Option(
        None, "--write-csv", help="Also write every finding to this CSV file (one row each: a to-do list)."
    ),
    backbone: list[str] | None = typer.Option(
        None, "--backbone", help="Backbone(s) to consider (default: the recipe's); the best by CV is used."
    ),
) -> None:
    """Likely label errors, near-duplicates across splits/folds, outliers and class imbalance; nothing is moved.

    Probabilities are out of sample: logistic regression with C by cross-validation on train+val (each photo
    predicted by the model of the other folds; test photos by the refit), on cached pooled vectors.
    """
    from automl.audit.run import audit_recipe
    from automl.recipe import load_recipe

    result = audit_recipe(load_recipe(recipe), backbones=backbone or None, progress=not as_json)
    if write_csv is not None:
        result.write_csv(write_csv)
    payload = result.to_json()
    if as_json:
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        _render_audit(payload, write_csv)


def _render_audit(report: dict[str, Any], csv_path: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    model, counts = report["model"], report["counts"]

    def rel(path: str) -> str:
        """Paths under the dataset folder as class/file: what fits a terminal (--json keeps them whole)."""
        return os.path.relpath(path, report["root"])

    console.print(
        f"[bold]{report['root']}[/] (paths below are relative to it): {report['photos']} photos, "
        f"{len(report['classes'])} classes; "
        f"{model['source']} on {model['backbone']} (C {model.get('c')}, OOF accuracy {model.get('oof_accuracy')}, "
        f"log-loss {model.get('oof_log_loss')}); {report['seconds']} s"
    )
    issues = Table("rank", "file", "split", "given", "suggested", "p(given)", title="Likely label errors")
    for item in report["label_issues"][:_SHOWN_FINDINGS]:
        issues.add_row(str(item["rank"]), rel(item["path"]), item["split"], item["given"], item["suggested"],
                       f"{item['score']:.3f}")  # fmt: skip
    console.print(issues)
    pairs = Table("cosine", "file", "near-duplicate of", "splits", "leak", title="Near-duplicates")
    leaking = sorted(report["near_duplicates"], key=lambda p: p["leak"] is None)
    for pair in leaking[:_SHOWN_FINDINGS]:
        pairs.add_row(f"{pair['cosine']:.3f}", rel(pair["a"]), rel(pair["b"]), f"{pair['a_split']}/{pair['b_split']}",
                      pair["leak"] or "")  # fmt: skip
    console.print(pairs)
    outliers = Table("file", "class", "nearest class", "cosine", title="Outliers (far from every class)")
    for item in report["outliers"][:_SHOWN_FINDINGS]:
        outliers.add_row(rel(item["path"]), item["label"], item["nearest_class"], f"{item['similarity']:.3f}")
    console.print(outliers)
    for copy in report["exact_copies"]:
        console.print(f"[red]same bytes in classes {', '.join(copy['classes'])}:[/] {' = '.join(copy['paths'])}")
    ratio = report["imbalance_ratio"]
    console.print(
        f"label issues {counts['label_issues']}, near-duplicate pairs {counts['near_duplicates']} "
        f"(across the test split {counts['leaks_split']}, across folds {counts['leaks_fold']}, across classes "
        f"{counts['near_duplicates_across_classes']}), outliers {counts['outliers']}, exact copies across classes "
        f"{counts['exact_copies_across_classes']}; largest/smallest class {ratio:.1f}"
        + (" [yellow](imbalanced)[/]" if report["imbalanced"] else "")
    )
    shown = max(len(report[k]) for k in ("label_issues", "near_duplicates", "outliers"))
    if shown > _SHOWN_FINDINGS:
        console.print("[dim]only the first of each kind shown: --json or --write-csv lists all[/]")
    if csv_path is not None:
        console.print(f"every finding written to {csv_path}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
