"""Search throughput: finished `all`-cut trials a minute, and the share of a warm search spent on features.

Runs the same all-cut recipe (animals10, EfficientNet-Lite0, every head and optimizer, 20 epochs, ASHA,
two 1-CPU trials at a time) twice with one bottleneck cache. The first run may build the features;
the second must find them all cached. Reports, for each run: trials finished (complete + pruned) per
minute of the trial phase, and the seconds spent on features against the whole wall time.

    python -m benchmarks.search_throughput [--time 3m] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.results import record, table

RECIPE = """
name: throughput
data: {{folder: animals10}}
search: {{backbones: efficientnet_lite0, cuts: all, epochs: 20, scheduler: asha}}
budget: {{time: {time}, trials: null}}
output: {{folder: {runs}}}
cache: {cache}
"""


def measure(time_budget: str, cache: str, runs: Path) -> list[dict[str, Any]]:
    from rich.console import Console

    from automl.recipe import parse_recipe
    from automl.search.run import run_search

    rows = []
    for attempt in ("first", "second (warm cache)"):
        recipe = parse_recipe(RECIPE.format(time=time_budget, cache=cache, runs=runs), source="throughput.yaml")
        summary = run_search(recipe, console=Console(stderr=True, soft_wrap=True)).summary
        trial_minutes = summary["phases"]["trials"] / 60
        rows.append(
            {
                "run": attempt,
                "trials finished": summary["trials"]["done"],
                "complete": summary["trials"]["complete"],
                "trial phase (s)": round(summary["phases"]["trials"], 1),
                "finished trials / min": round(summary["trials"]["done"] / trial_minutes, 1),
                "features (s)": summary["feature_seconds"],
                "wall (s)": summary["wall_seconds"],
                "features share": f"{100 * summary['feature_seconds'] / summary['wall_seconds']:.1f} %",
                "cache hits / misses": f"{summary['cache']['cache_hits']} / {summary['cache']['cache_misses']}",
                "best val": round(summary["best"]["val_accuracy"], 4),
                "test top-1": round(summary["best"]["test_top1"], 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", default="3m", help="budget.time of each search (default 3m)")
    parser.add_argument("--cache", default=None, help="bottleneck cache (default: a fresh temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="automl-throughput-") as scratch:
        rows = measure(args.time, args.cache or str(Path(scratch) / "cache"), Path(scratch) / "runs")
    print(json.dumps(rows, indent=2))
    record(
        "search_throughput",
        "Search throughput (all-cut trials) and feature share of a warm search",
        table(rows) + "\n\nTarget: at least 20 finished all-cut trials a minute; a warm search under 5 % on features.",
        f"python -m benchmarks.search_throughput --time {args.time}",
    )


if __name__ == "__main__":
    main()
