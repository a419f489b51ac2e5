"""The whole search against LR-CV over split seeds (issue 13): what `automl search` exports, scored on test photos.

    python -m benchmarks.search_seeds [--datasets animals10,trashnet] [--seeds 0-5] [--time 5m] [--section NAME]

For each dataset and split seed: the quick-start recipe (`recipes/animals10.yaml`: its space, heads, folds,
fine-tuning stage) pointed at the dataset, `data.seed` and `search.seed` set to the seed, `budget.time` to
`--time`; `automl cache build` first (warm cache: what it computed is recorded), then `automl search --json` in a
subprocess, as a user runs it. The exported model's test top-1, log-loss and ECE come from its `metrics.json`.
LR-CV on the same split (`benchmarks.selection.one_seed`: logistic regression on each backbone's pooled vectors,
C and backbone by 5-fold out-of-fold log-loss, refit on train + val) is the baseline; neither looks at a test
score to choose. Targets: mean test top-1 of the search >= LR-CV + 0.5 point on animals10 and + 1.0 on
trashnet, on no seed more than one test photo below LR-CV, ECE <= 0.03.
Writes benchmarks/out/<section>.json and the `<section>` section of RESULTS.md (`search_seeds` unless `--section`
names another: a run over some datasets keeps the others' section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks import results as results_md
from benchmarks.selection import BACKBONES, DATA, load_vectors, one_seed

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = ROOT / "recipes" / "animals10.yaml"
TARGET_GAIN = {"animals10": 0.005, "trashnet": 0.010}
TARGET_ECE = 0.03


def recipe_for(dataset: str, seed: int, budget: str, runs: Path) -> dict:
    """The quick-start recipe on `dataset` with split and search seed `seed` and `budget` of wall time."""
    recipe = yaml.safe_load(QUICK_START.read_text())
    recipe["name"] = f"{dataset}-seed{seed}"
    recipe["data"].update(folder=str(DATA / dataset), seed=seed)
    if dataset != "animals10":
        recipe["data"]["imagenet_classes"] = []
    recipe["search"]["seed"] = seed
    recipe["budget"]["time"] = budget
    recipe["output"]["folder"] = str(runs)
    return recipe


def automl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "automl", *args], capture_output=True, text=True, check=False)


def search(dataset: str, seed: int, budget: str, runs: Path) -> dict:
    """Build the cache, run the search, read what it exported."""
    path = runs / f"{dataset}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(recipe_for(dataset, seed, budget, runs)))
    build = automl("cache", "build", str(path), "--json")
    if build.returncode:
        raise RuntimeError(f"cache build failed: {build.stderr[-2000:]}")
    computed = sum(entry["computed"] for entry in json.loads(build.stdout)["backbones"])
    started = time.time()
    run = automl("search", str(path), "--json")
    wall = time.time() - started
    if run.returncode:
        raise RuntimeError(f"search failed ({run.returncode}): {run.stderr[-3000:]}")
    summary = json.loads(run.stdout)
    metrics = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    selection = summary.get("selection") or {}
    finetune = summary.get("finetune") or {}
    return {
        "cache_build_computed": computed,
        "wall_s": wall,
        "stop_reason": summary["stop_reason"],
        "chosen": selection.get("chosen"),
        "ensemble": selection.get("ensemble"),
        "cv_accuracy": (selection.get("cv") or {}).get("accuracy"),
        "finetune_exported": finetune.get("exported"),
        "latency_ms_p50": selection.get("latency_ms_p50"),
        "single_latency_ms_p50": selection.get("single_latency_ms_p50"),
        "test": {
            "top1": metrics["top1"],
            "log_loss": metrics.get("log_loss"),
            "ece": (metrics.get("calibration") or {}).get("ece"),
            "n": metrics.get("n") or metrics.get("images"),
        },
        "run_dir": summary["run_dir"],
    }


def ensure_pooled(dataset: str) -> None:
    """Every photo's pooled vectors (test split included) for the LR-CV baseline: its refit scores test photos."""
    from automl.backbones import get_backbone
    from automl.cache import BottleneckCache
    from automl.data.dataset import scan_dataset

    records = scan_dataset(DATA / dataset, train=0.7, val=0.15, test=0.15, seed=0).records
    for backbone in BACKBONES:
        BottleneckCache().ensure(get_backbone(backbone), "default", ["all"], records, progress=False)


def _photos(behind: int) -> str:
    return f"{behind} photos behind" if behind > 0 else f"{-behind} photos ahead" if behind < 0 else "even"


def summarise(name: str, rows: list[dict]) -> str:
    table, photos_behind = [], []
    for row in rows:
        ours, lr = row["search"]["test"], row["lr_cv"]
        behind = round((lr["top1"] - ours["top1"]) * row["test_photos"])
        photos_behind.append(behind)
        table.append(
            {
                "seed": row["seed"],
                "search top-1": f"{ours['top1']:.4f}",
                "log-loss": f"{ours['log_loss']:.4f}",
                "ECE": f"{ours['ece']:.4f}",
                "LR-CV top-1": f"{lr['top1']:.4f}",
                "LR-CV log-loss": f"{lr['log_loss']:.4f}",
                "LR-CV ECE": f"{lr['ece']:.4f}",
                "photos gained": -behind,
                "exported": row["search"]["chosen"],
                "wall s": f"{row['search']['wall_s']:.0f} ({row['search']['stop_reason']})",
                "latency ms (single)": f"{row['search']['latency_ms_p50'] or 0:.0f}"
                + (
                    f" ({row['search']['single_latency_ms_p50']:.0f})" if row["search"]["single_latency_ms_p50"] else ""
                ),
            }
        )
    mean = {key: float(np.mean([r["search"]["test"][key] for r in rows])) for key in ("top1", "log_loss", "ece")}
    lr_mean = {key: float(np.mean([r["lr_cv"][key] for r in rows])) for key in ("top1", "log_loss", "ece")}
    gain = mean["top1"] - lr_mean["top1"]
    target = TARGET_GAIN.get(name, 0.0)
    checks = {
        f"{name}: mean test top-1 {mean['top1']:.4f} vs LR-CV {lr_mean['top1']:.4f} "
        f"({100 * gain:+.2f} points, target >= +{100 * target:.1f})": gain >= target,
        f"{name}: at most one test photo below LR-CV on every seed (worst: {_photos(max(photos_behind))})": max(
            photos_behind
        )
        <= 1,
        f"{name}: mean test ECE {mean['ece']:.4f} <= {TARGET_ECE}": mean["ece"] <= TARGET_ECE,
    }
    return (
        f"### {name}\n\n"
        + results_md.table(table)
        + f"\n\nMeans: search top-1 {mean['top1']:.4f}, log-loss {mean['log_loss']:.4f}, ECE {mean['ece']:.4f}; "
        f"LR-CV top-1 {lr_mean['top1']:.4f}, log-loss {lr_mean['log_loss']:.4f}, ECE {lr_mean['ece']:.4f}.\n\n"
        + results_md.verdicts(checks)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="animals10,trashnet")
    parser.add_argument("--seeds", default="0-5")
    parser.add_argument("--time", default="5m", help="budget.time of each search")
    parser.add_argument("--section", default="search_seeds", help="RESULTS.md section (and out/ file) to write")
    args = parser.parse_args()
    low, _, high = args.seeds.partition("-")
    seeds = range(int(low), int(high or low) + 1)
    started = time.perf_counter()
    results: dict[str, list[dict]] = {}
    sections = []
    with tempfile.TemporaryDirectory(prefix="automl-search-seeds-") as scratch:
        for name in args.datasets.split(","):
            ensure_pooled(name)
            vectors = load_vectors(name, BACKBONES)
            classes = int(vectors.labels.max()) + 1
            results[name] = []
            for seed in seeds:
                baseline = one_seed(vectors, BACKBONES, seed, classes)
                row = {
                    "seed": seed,
                    "test_photos": baseline["test_photos"],
                    "lr_cv": baseline["lr_cv"],
                    "search": search(name, seed, args.time, Path(scratch)),
                }
                results[name].append(row)
                print(json.dumps(row), flush=True)
            sections.append(summarise(name, results[name]))
    summary = (
        f"The quick-start recipe (its space, 5 folds, fine-tuning stage) with `budget.time: {args.time}`, data and "
        "search seed = the split seed, `automl cache build` before each search (warm cache), one search at a time "
        "on this 2-core machine. LR-CV: logistic regression on each Lite backbone's pooled vectors, C and backbone "
        "by 5-fold OOF log-loss, refit on train + val, uncalibrated. Test photos scored once, after export; "
        "latency: single-photo p50 of the exported model (of its best single candidate in brackets when it is an "
        "ensemble).\n\n" + "\n".join(sections) + f"\nTotal {time.perf_counter() - started:.0f} s."
    )
    title = "The whole search against LR-CV over split seeds (issue 13)"
    if args.section != "search_seeds":
        title += f": {args.datasets}, {args.time}"
    results_md.publish(args.section, title, results, summary)


if __name__ == "__main__":
    main()
