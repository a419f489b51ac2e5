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

from automl.data.files import MAX_FILE_BYTES, MIB

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
ENGINE_OPTION = typer.Option(
    "auto", help="keras, openvino (the IR the search exported beside the model) or auto (openvino when it is there)."
)


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2))


def _print_evaluation(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from automl.cli.text import safe

    console = Console()
    console.print(
        f"[bold]{result['n']} photos ({result['split']})[/]  top-1 {result['top1']:.2%} "
        f"(95 % interval {result['top1_ci95'][0]:.1%}-{result['top1_ci95'][1]:.1%})  top-5 {result['top5']:.2%}  "
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
            safe(row["label"]),
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
    pairs = "; ".join(f"{safe(p['true'])} → {safe(p['predicted'])} ×{p['count']}" for p in result["confused_pairs"][:5])
    console.print(f"most confused: {pairs or 'none'}")
    for skipped in result["skipped"]:
        console.print(f"[yellow]skipped[/] {safe(skipped['file'])}: {safe(skipped['error'])}")


def _print_predictions(report: dict[str, Any]) -> None:
    from rich.console import Console

    from automl.cli.text import safe

    console = Console()
    for result in report["results"]:
        labels = ", ".join(f"{safe(item['label'])} {item['score']:.3f}" for item in result["labels"])
        console.print(f"[bold]{safe(result['file'])}[/]: {labels}")
    for error in report["errors"]:
        console.print(f"[red]{safe(error['file'])}[/]: {safe(error['error'])}")


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
    max_file_mb: float = typer.Option(
        MAX_FILE_BYTES / MIB, min=0.001, help="Largest photo file read; larger ones are reported, not read."
    ),
    engine: str = ENGINE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The TOP labels with scores for each photo; unreadable photos are listed, and fail the command only if all do.

    Only regular files are read (a FIFO, a device or a folder is reported and skipped).
    """
    from automl.exported import ExportedModel

    report = ExportedModel.load(model, engine=engine).predict_files(images, top=top, max_bytes=int(max_file_mb * MIB))
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_predictions(report.to_dict())
    if not report.results:
        raise typer.Exit(1)


def report(run_dir: Path = typer.Argument(..., help="Run folder a search wrote.")) -> None:
    """Write RUN_DIR/report.html: one self-contained page (opens from disk, no server, no network)."""
    from automl.report import write_report

    typer.echo(write_report(run_dir))


def curve(
    recipe: Path = typer.Argument(..., help="Recipe YAML: its data, split, first backbone, weights and cache."),
    shots: str = typer.Option("1,3,10,30,all", help="Training photos per class, comma-separated; 'all' for all."),
    repeats: int = typer.Option(5, min=1, help="Random draws per number of shots (the interval is over them)."),
    backbone: str | None = typer.Option(None, help="Backbone to use instead of the recipe's first."),
    plot: Path | None = typer.Option(None, help="PNG to write (default: <output folder>/<recipe>-curve.png)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Test top-1/top-5 (mean and 95 % interval) against training photos per class, on cached bottlenecks."""
    from automl.curve import parse_shots, run_curve
    from automl.recipe import load_recipe

    loaded = load_recipe(recipe)
    target = plot or Path(loaded.output.folder) / f"{loaded.name}-curve.png"
    result = run_curve(loaded, parse_shots(shots), repeats, target, backbone)
    if as_json:
        _print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("photos/class", "draws", "top-1 (95 % interval)", "top-5 (95 % interval)", "seconds")
    for point in result["points"]:
        cells = [f"{p['mean']:.1%} [{p['low']:.1%}, {p['high']:.1%}]" for p in (point["top1"], point["top5"])]
        per_class = point["images_per_class"]
        count = (
            str(per_class["max"]) if per_class["min"] == per_class["max"] else f"{per_class['min']}-{per_class['max']}"
        )
        table.add_row(f"{point['shots']} ({count})", str(point["repeats"]), *cells, f"{point['seconds']:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"{result['backbone']} + {result['head']}, {result['test_images']} test photos; plot: {result['plot']}"
    )


def bench(
    recipe: Path = typer.Argument(..., help="Recipe YAML: its data, first backbone, weights, heads and cache."),
    model: Path | None = typer.Option(None, help="Exported model to time (default: the recipe's newest run)."),
    images: int = typer.Option(64, min=1, help="Photos decoded (and used as inference inputs)."),
    runs: int = typer.Option(30, min=1, help="Timed single-photo inferences (p50/p95 over them)."),
    epochs: int = typer.Option(3, min=1, help="Epochs trained per head (the first is not timed: tracing)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per-phase timings: decode, bottleneck, training per epoch per head, inference latency and throughput."""
    from automl.bench import run_bench
    from automl.recipe import load_recipe

    result = run_bench(load_recipe(recipe), model=model, images=images, runs=runs, epochs=epochs)
    if as_json:
        _print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("phase", "time", "rate", title=f"{result['backbone']} on {result['machine']['cpu']}")
    table.add_row(
        "decode + resize",
        f"{result['decode']['ms_per_image']:.2f} ms/photo",
        f"{result['decode']['images_per_s']:.0f} photos/s",
    )
    table.add_row(
        "bottleneck (batch 32)",
        f"{result['bottleneck']['ms_per_image']:.2f} ms/photo",
        f"{result['bottleneck']['images_per_s']:.0f} photos/s",
    )
    for head, timing in result["training"]["heads"].items():
        table.add_row(
            f"training, {head} head",
            f"{timing['epoch_seconds']:.3f} s/epoch",
            f"{result['training']['train_images']} photos",
        )
    inference = result["inference"]
    if inference:
        latency = inference["latency_ms"]
        table.add_row("inference, 1 photo", f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms", "")
        table.add_row(
            f"inference, batch {inference['batch']}", "", f"{inference['throughput_images_per_s']:.0f} photos/s"
        )
    Console().print(table)
    if not inference:
        typer.echo("no exported model found: pass --model RUN_DIR to time inference")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
    app.command("report")(report)
    app.command("curve")(curve)
    app.command("bench")(bench)
