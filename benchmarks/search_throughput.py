"""Search throughput: finished `all`-cut trials a minute, and the share of a warm search spent on features.

Runs the same all-cut recipe (animals10, EfficientNet-Lite0, every head and optimizer, 20 epochs, ASHA,
two 1-CPU trials at a time) twice with one bottleneck cache. The first run may build the features;
the second must find them all cached. Reports, for each run: trials finished (complete + pruned) per
minute of the trial phase, and the seconds spent on features against the whole wall time. Exits 1 when
a run finishes fewer than 20 trials a minute or the warm one spends 5 % or more of its time on features.

    python -m benchmarks.search_throughput [--time 3m] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.results import publish, table, verdicts

MIN_TRIALS_PER_MINUTE = 20
MAX_WARM_FEATURE_SHARE = 5.0
"""Targets: finished all-cut trials a minute in every run; % of a warm search's wall time spent on features."""

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
    from automl.search.driver import run_search

    rows = []
    for attempt in ("first", "second (warm cache)"):
        recipe = parse_recipe(RECIPE.format(time=time_budget, cache=cache, runs=runs), source="throughput.yaml")
        summary = run_search(recipe, console=Console(stderr=True, soft_wrap=True)).summary.model_dump()
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
                "features share (%)": round(100 * summary["feature_seconds"] / summary["wall_seconds"], 1),
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
    fast_enough = min(row["finished trials / min"] for row in rows) >= MIN_TRIALS_PER_MINUTE
    warm_is_cached = rows[-1]["features share (%)"] < MAX_WARM_FEATURE_SHARE
    checks = {
        f"every run finishes at least {MIN_TRIALS_PER_MINUTE} all-cut trials a minute": fast_enough,
        f"the warm search spends under {MAX_WARM_FEATURE_SHARE:g} % of its time on features": warm_is_cached,
    }
    publish(
        "search_throughput",
        "Search throughput (all-cut trials) and feature share of a warm search",
        rows,
        f"{table(rows)}\n\n{verdicts(checks)}\n",
        f"python -m benchmarks.search_throughput --time {args.time}",
    )
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
