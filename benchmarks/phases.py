"""Phase timings and the learning curve of a recipe: what `automl bench` and `automl curve` report.

    python -m benchmarks.phases [--recipe recipes/animals10.yaml] [--model RUN_DIR] [--repeats 5]

Runs `run_bench` (decode, bottleneck, epoch per head, exported-model latency and throughput; the model is
--model or the recipe's newest run) and `run_curve` (shots 1, 3, 10, 30 and all on the cached vectors;
the cache is filled first, so the curve's own time is the warm-cache time). Prints both, writes
benchmarks/out/phases.json and replaces the `phases` section of benchmarks/RESULTS.md. Exits 1 when the
curve misses its time limit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from automl.bench import run_bench
from automl.curve import cached_vectors, run_curve
from automl.recipe import load_recipe
from benchmarks.results import OUT, publish, table, verdicts

SHOTS = [1, 3, 10, 30, "all"]
CURVE_LIMIT_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/animals10.yaml"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)

    bench = run_bench(recipe, model=args.model)
    cached_vectors(recipe, None, ("train", "test"))  # warm the cache: the curve is timed on a warm one
    clock = time.perf_counter()
    curve = run_curve(recipe, SHOTS, args.repeats, OUT / "phases-curve.png")
    curve_seconds = time.perf_counter() - clock

    rows = [
        {"phase": "decode + resize", "per unit": f"{bench['decode']['ms_per_image']:.2f} ms/photo"},
        {
            "phase": f"bottleneck ({bench['backbone']}, batch 32)",
            "per unit": f"{bench['bottleneck']['ms_per_image']:.2f} ms/photo",
        },
        *(
            {
                "phase": f"training, {head} head ({bench['training']['train_images']} photos)",
                "per unit": f"{t['epoch_seconds']:.3f} s/epoch",
            }
            for head, t in bench["training"]["heads"].items()
        ),
    ]
    if bench["inference"]:
        latency = bench["inference"]["latency_ms"]
        model = f"exported {bench['inference']['backbone']} model"
        rows.append(
            {
                "phase": f"inference, {model}, 1 photo",
                "per unit": f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms",
            }
        )
        rows.append(
            {
                "phase": f"inference, {model}, batch 32",
                "per unit": f"{bench['inference']['throughput_images_per_s']:.0f} photos/s",
            }
        )
    points = [
        {
            "photos/class": p["shots"],
            "top-1": f"{p['top1']['mean']:.3f} [{p['top1']['low']:.3f}, {p['top1']['high']:.3f}]",
            "top-5": f"{p['top5']['mean']:.3f} [{p['top5']['low']:.3f}, {p['top5']['high']:.3f}]",
        }
        for p in curve["points"]
    ]
    target = f"learning curve on a warm cache in {curve_seconds:.1f} s (limit {CURVE_LIMIT_S:.0f} s)"
    checks = {target: curve_seconds < CURVE_LIMIT_S}
    body = (
        f"{table(rows)}\n\nLearning curve ({curve['backbone']} frozen + logistic regression, {curve['test_images']} "
        f"test photos, {args.repeats} draws, 95 % intervals):\n\n{table(points)}\n\n{verdicts(checks)}\n"
    )
    title = f"Phase timings and learning curve ({recipe.name})"
    publish("phases", title, {"bench": bench, "curve": curve, "curve_seconds": curve_seconds}, body)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
