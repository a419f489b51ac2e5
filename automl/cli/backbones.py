"""`automl backbones [NAME...] [--json]`: the registered backbones, their plugins, cut points and weights."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def describe(registered: Any) -> dict[str, Any]:
    """One backbone as plain data: plugin, input, cut points with shapes, size, weights availability."""
    backbone = registered.backbone
    return {
        "name": backbone.name,
        "distribution": registered.distribution,
        "version": registered.version,
        "entry_point": registered.entry_point,
        "description": backbone.description,
        "input_size": backbone.input_size,
        "resize": asdict(backbone.resize),
        "preprocessing": backbone.preprocessing_id,
        "feature_size": backbone.feature_size,
        "parameters": backbone.parameter_count(),
        "cut_points": {
            name: {"output_shape": list(cut.output_shape), "at": asdict(cut.at) if cut.at else None}
            for name, cut in backbone.cut_points().items()
        },
        "default_weights_offline": backbone.weights_offline("default"),
    }


def backbones(
    names: list[str] = typer.Argument(None, help="Only these backbones (default: all registered)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {backbones: [...], problems: [...]}."),
) -> None:
    """List every registered backbone: plugin, input size, cut points and their output shapes, feature
    size, parameters, and whether its default weights are available offline now. Plugins that failed to
    load, or registered a name already taken, are listed as problems (they are skipped)."""
    from rich.progress import track

    from automl.backbones.registry import PluginWarning, load_backbones

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # listed below as problems instead
        registry = load_backbones()
    for name in names or []:
        registry.get(name)  # InputError (exit 2) naming the available backbones
    chosen = [registry.backbones[name] for name in (names or registry.names())]
    stderr = Console(stderr=True)
    rows = [describe(r) for r in track(chosen, description="building architectures", console=stderr, transient=True)]
    problems = [asdict(p) for p in registry.problems]
    if as_json:
        typer.echo(json.dumps({"backbones": rows, "problems": problems}, indent=2))
        return
    table = Table()
    for column in ("name", "plugin", "input", "cut points", "features", "params", "offline"):
        table.add_column(column, no_wrap=column in ("name", "cut points"))
    for row in rows:
        cuts = "\n".join(f"{name} {'x'.join(map(str, cut['output_shape']))}" for name, cut in row["cut_points"].items())
        table.add_row(
            row["name"],
            f"{row['distribution']}\n{row['version']}",
            f"{row['input_size']}px",
            cuts,
            str(row["feature_size"]),
            f"{row['parameters'] / 1e6:.1f}M",
            "yes" if row["default_weights_offline"] else "no",
        )
    Console().print(table)
    for problem in registry.problems:
        stderr.print(
            f"[yellow]skipped plugin[/] {problem.name} ({problem.distribution} {problem.version}, "
            f"{problem.entry_point}): {problem.reason}"
        )


def register(app: typer.Typer) -> None:
    app.command("backbones")(backbones)
