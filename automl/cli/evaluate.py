"""`automl evaluate|predict|report|curve|bench`: use an exported model and measure what the studies measured.

Exit codes: 0 on success; 2 for bad input (missing model, unknown classes, bad recipe); `predict` exits 1
only when no input at all could be read (each unreadable file is reported in `errors`, the others
are still predicted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2))


def _print_evaluation(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{result['n']} photos ({result['split']})[/]  top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  "
        f"macro F1 {result['macro']['f1']:.3f}"
    )
    for group in ("internal", "external"):
        if result.get(group):
            summary = result[group]
            console.print(
                f"{group} classes ({len(summary['classes'])}): top-1 {summary['top1']:.2%}, "
                f"mean class accuracy {summary['mean_class_accuracy']:.2%}"
            )
    table = Table("class", "n", "accuracy", "precision", "recall", "F1", title="per class")
    for row in result["per_class"]:
        table.add_row(
            row["label"],
            str(row["support"]),
            f"{row['accuracy']:.2%}",
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
        )
    console.print(table)
    edges, counts = result["histogram"]["edges"], result["histogram"]["counts"]
    bins = ", ".join(f"{lo}-{hi}%: {n}" for lo, hi, n in zip(edges, edges[1:], counts, strict=False) if n)
    console.print(f"classes per accuracy bin: {bins}")
    pairs = "; ".join(f"{p['true']} → {p['predicted']} ×{p['count']}" for p in result["confused_pairs"][:5])
    console.print(f"most confused: {pairs or 'none'}")
    for skipped in result["skipped"]:
        console.print(f"[yellow]skipped[/] {skipped['file']}: {skipped['error']}")


def _print_predictions(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    for result in report["results"]:
        labels = ", ".join(f"{item['label']} {item['score']:.3f}" for item in result["labels"])
        console.print(f"[bold]{result['file']}[/]: {labels}")
    for error in report["errors"]:
        console.print(f"[red]{error['file']}[/]: {error['error']}")


def evaluate(
    model: Path = typer.Argument(..., help="Run folder, its model/ folder, or a .keras file."),
    data: Path = typer.Argument(..., help="Dataset folder, one sub-folder per class (relative to $AUTOML_DATA)."),
    split: str = typer.Option("all", help="all, or train/val/test: the search's own split of DATA."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Top-1/top-5, per-class accuracy, precision/recall/F1, confusion matrix and accuracy histogram on DATA."""
    from automl.errors import InputError
    from automl.evaluate import evaluate_folder
    from automl.exported import ExportedModel

    if split not in ("all", "train", "val", "test"):
        raise InputError(f"--split {split!r} is not one of all, train, val, test")
    result = evaluate_folder(ExportedModel.load(model), data, split=split)  # type: ignore[arg-type]
    if as_json:
        _print_json(result)
        return
    _print_evaluation(result)


def predict(
    model: Path = typer.Argument(..., help="Run folder, its model/ folder, or a .keras file."),
    images: list[Path] = typer.Argument(..., help="Photos to label (any format Pillow reads, by content)."),
    top: int = typer.Option(5, "--top", min=1, help="How many labels per photo."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The TOP labels with scores for each photo; unreadable photos are listed, and fail the command only if all do."""
    from automl.exported import ExportedModel

    report = ExportedModel.load(model).predict_files(images, top=top)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_predictions(report.to_dict())
    if not report.results:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
