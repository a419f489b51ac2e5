"""`automl cache ls|build|verify|prune`: inspect, fill, check and trim the shared bottleneck cache.

Exit codes: 0 on success; 1 when `verify` found damaged parts (they are removed unless --keep, and the
next build recomputes their images); 2 for bad input (recipe, unknown backbone, bad size or age).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from automl.errors import InputError

if TYPE_CHECKING:
    from automl.cache.distributed import Executor
    from automl.engines import EngineChoice

cache_app = typer.Typer(help="Inspect, build, verify and prune the bottleneck cache.", no_args_is_help=True)

CACHE_OPTION = typer.Option(None, "--cache", help="Cache folder (default: $AUTOML_CACHE, else ~/.cache/automl).")
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _store(cache: str | None):  # -> PartStore, imported lazily to keep `automl --help` fast
    from automl.cache.store import PartStore
    from automl.paths import cache_root

    return PartStore(cache_root(cache))


def _echo_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2))


def parse_size(text: str) -> int:
    """Bytes from `500MB`, `10G`, `1.5GiB`, `2048` (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise InputError(f"--max-size {text!r} is not a size", hint="write it like 500MB, 10GB or 1.5G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_age(text: str) -> float:
    """Seconds from `30d`, `12h`, `90m`, `1h30m`."""
    from automl.recipe import parse_duration

    days = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*d\s*", text)
    if days:
        return float(days.group(1)) * 86400
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"--older-than {text!r} is not an age", hint="write it like 30d, 12h or 90m") from exc
    return float(seconds or 0)


@cache_app.command("ls")
def list_entries(cache: str | None = CACHE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """One line per (backbone, weights, cut, preprocessing): parts, images, size, dtype, shape, age; a view other
    than the original is its own line, its cut shown as `cut@view`."""
    from automl.cache.views import entry_label

    store = _store(cache)
    entries: dict[tuple[str, ...], dict[str, Any]] = defaultdict(
        lambda: {"parts": 0, "rows": 0, "bytes": 0, "dtypes": set(), "shape": None, "newest": 0.0}
    )
    for part in store.parts():
        m = part.manifest
        entry = entries[(m.backbone, m.weights_id, entry_label(m.cut, m.view), m.preprocessing_id)]
        entry.update(shape=list(m.shape), newest=max(entry["newest"], m.created))
        entry["parts"] += 1
        entry["rows"] += m.rows
        entry["bytes"] += m.bytes
        entry["dtypes"].add(str(m.dtype).lstrip("<|"))
    rows = [
        {"backbone": b, "weights_id": w, "cut": c, "preprocessing_id": p, **e, "dtypes": sorted(e["dtypes"])}
        for (b, w, c, p), e in sorted(entries.items())
    ]
    if as_json:
        _echo_json({"root": str(store.root), "entries": rows, "bytes": sum(r["bytes"] for r in rows)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "backbone", "weights", "cut", "images", "parts", "size", "dtype", "shape", "newest", title=str(store.root)
    )
    for row in rows:
        table.add_row(
            row["backbone"],
            row["weights_id"][:24],
            row["cut"],
            f"{row['rows']:,}",
            str(row["parts"]),
            f"{row['bytes'] / 1e6:,.1f} MB",
            ",".join(row["dtypes"]),
            "x".join(map(str, row["shape"])),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(row["newest"])),
        )
    Console().print(table if rows else f"{store.root}: empty")


@cache_app.command("build")
def build(
    recipe_file: Path = typer.Argument(..., help="Recipe YAML: its dataset, backbones, weights, cuts and cache."),
    executor: str = typer.Option("auto", help="local, ray (shard over the connected Ray cluster) or auto."),
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass."),
    engine: str | None = typer.Option(
        None, help="auto, openvino or tensorflow: runs the frozen backbone (default: the recipe's resources.engine)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compute the features the recipe's search will read (and only those), so that it starts on a warm cache.

    Exactly the search's `FeaturePlan`, of the train and val photos (no trial reads the test split): cut `all`
    of every backbone (LR-CV, the selection), the cuts its Tune trials may train on, and the fine-tuning stage's
    cut in its views (`stage`: the search reads it for the one backbone it fine-tunes, chosen as it runs).
    """
    from automl.audit.grouping import dataset_for_recipe
    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.engines import resolve as resolve_engine
    from automl.paths import cache_root
    from automl.recipe import load_recipe
    from automl.search.features import FeaturePlan, extraction_cost

    if executor not in ("auto", "local", "ray"):
        raise InputError(f"--executor {executor!r} is not allowed", hint="use local, ray or auto")
    recipe = load_recipe(recipe_file)
    resolve_engine(engine or recipe.resources.engine)  # an unknown engine is refused before the scan
    dataset = dataset_for_recipe(recipe, progress=not as_json)  # the search's split, near-duplicate groups included
    cache = BottleneckCache(cache_root(recipe.cache))
    backbones = {name: get_backbone(name) for name in recipe.search.backbones}
    plan = FeaturePlan.for_search(
        recipe.search,
        {name: list(b.cut_points()) for name, b in backbones.items()},
        {name: extraction_cost(b) for name, b in backbones.items()},
    )
    all_stats = plan.ensure(
        cache,
        backbones,
        recipe.search.weights,
        dataset,
        progress=not as_json,
        executor=cast("Executor", executor),
        batch_size=batch_size,
        engine=cast("EngineChoice", engine or recipe.resources.engine),
    )
    results: list[dict[str, Any]] = []
    for name, stats in all_stats.items():
        cuts = plan.cuts[name]
        stage = plan.stage.get(name)
        results.append(
            {
                "backbone": name,
                "cuts": list(cuts),
                "stage": {"cut": stage.cut, "views": list(stage.views)} if stage else None,
                "splits": list(plan.splits),
                "images": len(plan.records(dataset)),
                "computed": stats.computed,
                "reused": stats.reused,
                "computed_by_cut": stats.computed_by_cut,
                "failed": [{"file": str(f.path), "reason": f.reason} for f in stats.failed],
                "repaired": stats.repaired,
                "seconds": round(stats.seconds, 3),
                "bytes": stats.bytes,
            }
        )
        if not as_json:
            rate = stats.computed / stats.seconds if stats.seconds else 0.0
            staged = f" + fine-tuning {stage.cut}@{'/'.join(stage.views)}" if stage else ""
            typer.echo(
                f"{name} [{', '.join(cuts)}]{staged} of {'+'.join(plan.splits)}: {stats.computed} computed, "
                f"{stats.reused} reused, {len(stats.failed)} failed, {stats.bytes / 1e6:.1f} MB written in "
                f"{stats.seconds:.1f} s ({rate:.1f} images/s)"
            )
            for item in results[-1]["failed"]:
                typer.secho(f"  skipped {item['file']}: {item['reason']}", fg=typer.colors.YELLOW)
            for repaired in stats.repaired:
                typer.secho(f"  repaired {repaired} (its images were recomputed)", fg=typer.colors.YELLOW)
    if as_json:
        _echo_json({"root": cache.root, "recipe": recipe.name, "backbones": results})


@cache_app.command("verify")
def verify(
    cache: str | None = CACHE_OPTION,
    keep: bool = typer.Option(False, "--keep", help="Only report damaged parts; do not delete them."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every part's size, SHA-256 and content against its manifest; delete damaged ones (exit 1)."""
    store = _store(cache)
    parts = store.parts()
    bad = store.check_all(delete=not keep, force=True)
    report: dict[str, Any] = {
        "root": str(store.root),
        "parts": len(parts),
        "ok": len(parts) - sum(1 for b in bad if b.reason != "manifest is unreadable"),
        "bad": [{"part": str(b.path), "reason": b.reason, "deleted": b.deleted} for b in bad],
    }
    if as_json:
        _echo_json(report)
    else:
        typer.echo(f"{store.root}: {report['ok']} of {len(parts)} parts intact")
        for item in report["bad"]:
            action = "deleted; the next build recomputes its images" if item["deleted"] else "kept (--keep)"
            typer.secho(f"  damaged {item['part']}: {item['reason']} ({action})", fg=typer.colors.RED)
    if bad:
        raise typer.Exit(1)


@cache_app.command("prune")
def prune(
    cache: str | None = CACHE_OPTION,
    backbone: str | None = typer.Option(None, help="Delete every part of this backbone."),
    older_than: str | None = typer.Option(None, help="Delete parts created longer ago than this (30d, 12h)."),
    max_size: str | None = typer.Option(None, help="Then delete the oldest parts until the cache fits (10GB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete parts by backbone, age or total size; always clears files left by writers that died."""
    from automl.cache.store import select_for_pruning

    store = _store(cache)
    chosen = select_for_pruning(
        store.parts(),
        backbone=backbone,
        older_than_s=parse_age(older_than) if older_than else None,
        max_bytes=parse_size(max_size) if max_size else None,
    )
    stale = [] if dry_run else store.prune_stale()
    if not dry_run:
        for part in chosen:
            store.delete(part)
    freed = sum(part.manifest.bytes for part in chosen)
    if as_json:
        _echo_json(
            {
                "root": str(store.root),
                "dry_run": dry_run,
                "parts": [str(part.path) for part in chosen],
                "bytes": freed,
                "stale_files": [str(path) for path in stale],
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{store.root}: {verb} {len(chosen)} parts ({freed / 1e6:,.1f} MB), {len(stale)} stale files")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
