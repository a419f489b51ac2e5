"""A real run folder for the tests of the exported model, evaluation, report, curve and bench.

It does what a search does, minus Ray and Optuna (those are the search's own tests): the real bottleneck
cache for EfficientNet-Lite0 with its bundled ImageNet weights on animals10, a small grid of real
trials (`automl.train.train_trial`) written as trials.parquet by the search's own writer, the best one
(picked as the search picks it) assembled and saved with `ExportedModel.save`, evaluated on the test split
with `evaluate_run` (SavedModel and TFLite checks included), and summary.json with the phase timings it
measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from automl.audit.run import audit_run
from automl.backbones.registry import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import Dataset
from automl.evaluate import evaluate_run
from automl.exported import ExportedModel
from automl.recipe import load_recipe
from automl.search.leaderboard import best_trial
from automl.search.run import _write_parquet
from automl.train import TrialData, TrialResult, assemble, baseline_config, train_trial

REPO = Path(__file__).resolve().parents[1]
BACKBONE, WEIGHTS, CUT = "efficientnet_lite0", "default", "all"
EPOCHS = 5
GRID = [
    {"head": head, "optimizer": optimizer, "learning_rate": rate}
    for head in ("softmax", "svm", "mlp")
    for optimizer, rate in (("adam", 1e-3), ("sgd", 3e-2), ("sgd", 1e-4))
]
"""Nine trials: every head with Adam, a good SGD rate and a far too small one (so the tables differ)."""
CONDITIONAL = {
    "softmax": [],
    "svm": ["svm_c"],
    "mlp": ["mlp_hidden", "dropout"],
    "adam": ["epsilon"],
    "sgd": ["momentum"],
}
"""Dimensions that exist only for one head or optimizer: columns left empty otherwise, as the search does."""


@dataclass
class BuiltRun:
    root: Path
    recipe: Path
    cache: Path
    dataset: Dataset


def write_recipe(path: Path, animals10: Path, cache: Path) -> Path:
    """recipes/animals10.yaml pointed at the test's data and cache, with the trial grid as its space."""
    recipe = load_recipe(REPO / "recipes" / "animals10.yaml").model_dump(mode="json")
    recipe["data"]["folder"] = str(animals10)
    recipe["search"].update(backbones=[BACKBONE], cuts=[CUT], epochs=EPOCHS)
    recipe["cache"] = str(cache)
    path.write_text(json.dumps(recipe), encoding="utf-8")  # JSON is YAML
    return path


def _features(cache: BottleneckCache, records: list) -> tuple:
    backbone = get_backbone(BACKBONE)
    x = cache.load(backbone, WEIGHTS, CUT, [r.sha1 for r in records])
    return x, [r.label for r in records]


def build_run(root: Path, animals10: Path) -> BuiltRun:
    """Cache, trials, best model, metrics.json, trials.parquet, summary.json in `root`; returns where."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    cache_dir = root.parent / f"{root.name}-cache"
    recipe_path = write_recipe(root / "recipe.yaml", animals10, cache_dir)
    recipe = load_recipe(recipe_path)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    dataset = Dataset.from_recipe(recipe.data)
    backbone = get_backbone(BACKBONE)
    cache = BottleneckCache(str(cache_dir))
    stats = cache.ensure(backbone, WEIGHTS, [CUT], dataset.records, progress=False, executor="local")
    phases["features"] = stats.seconds
    x_train, y_train = _features(cache, dataset.split("train"))
    x_val, y_val = _features(cache, dataset.split("val"))
    data = TrialData(x_train, np.asarray(y_train), x_val, np.asarray(y_val), len(dataset.classes))

    clock = time.perf_counter()
    rows, results = [], {}
    for number, params in enumerate(GRID):
        config = {**baseline_config(), **params, "backbone": BACKBONE, "cut": CUT, "epochs": EPOCHS, "seed": number}
        result = train_trial(config, data)
        name = f"{BACKBONE}-{CUT}-{params['head']}-{params['optimizer']}-{number:04d}"
        results[name] = result
        rows.append(
            {
                "trial_id": f"{number:04d}",
                "name": name,
                "status": "complete",
                "val_accuracy": result.best_val_accuracy,
                "val_top5": result.best_val_top5,
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "seconds": result.seconds,
                "finished_at": time.time(),
                **{f"param_{key}": config[key] for key in ("backbone", "cut", "batch_size", *params)},
                **{
                    f"param_{key}": config[key]
                    for key in CONDITIONAL[params["head"]] + CONDITIONAL[params["optimizer"]]
                },
                "epoch_val_accuracy": json.dumps([epoch["val_accuracy"] for epoch in result.history]),
            }
        )
    phases["trials"] = time.perf_counter() - clock
    trials = pd.DataFrame(rows)
    _write_parquet(trials, root / "trials.parquet")

    clock = time.perf_counter()
    best_name = best_trial(trials)["name"]
    best: TrialResult = results[best_name]
    model = assemble(backbone, WEIGHTS, CUT, best, dataset.classes)
    meta = {"backbone": BACKBONE, "weights": WEIGHTS, "config": best.config, "data": recipe.data.model_dump()}
    ExportedModel.save(root / "model", model, dataset.classes, backbone.resize, meta)
    test_files = [(record.path, dataset.classes[record.label]) for record in dataset.split("test")]
    metrics = evaluate_run(root, test_files, internal_classes=recipe.data.imagenet_classes)
    phases["export_and_test"] = time.perf_counter() - clock
    summary = {
        "recipe": recipe.name,
        "stop_reason": "search_space",
        "wall_seconds": time.perf_counter() - started,
        "trials": {"done": len(rows), "complete": len(rows), "pruned": 0, "failed": 0},
        "best": {
            "trial": best_name,
            "config": best.config,
            "val_accuracy": best.best_val_accuracy,
            "test_top1": metrics["top1"],
        },
        "phases": phases,
        "cache": {"cache_hits": stats.reused, "cache_misses": stats.computed},
    }
    (root / "summary.json").write_text(json.dumps(summary, default=str), encoding="utf-8")
    audit_run(root)  # as the search does before its report
    return BuiltRun(root, recipe_path, cache_dir, dataset)
