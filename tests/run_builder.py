"""A real run folder for the tests of the exported model, evaluation, report, curve and bench.

It does what a search does, minus Ray and Optuna (those are the search's own tests): the real bottleneck
cache for EfficientNet-Lite0 with its bundled ImageNet weights on animals10, a small grid of real
trials (`automl.train.train_trial`) written as trials.parquet through `automl.runs.TrialTable`, the best one
(`TrialTable.best()`, as the search picks it) assembled and saved with `ExportedModel.save`, evaluated on the test split
with `evaluate_run` (SavedModel and TFLite checks included), and summary.json with the phase timings it
measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from automl.audit.run import audit_run
from automl.backbones.registry import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import Dataset
from automl.evaluate import evaluate_run
from automl.exported import ExportedModel
from automl.recipe import load_recipe
from automl.runs import BestTrial, RunFolder, Summary, TrialCounts, TrialTable
from automl.runs.records import CacheUse
from automl.runs.trials import record_of
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
    records, results = [], {}
    for number, params in enumerate(GRID):
        config = {**baseline_config(), **params, "backbone": BACKBONE, "cut": CUT, "epochs": EPOCHS, "seed": number}
        result = train_trial(config, data)
        name = f"{BACKBONE}-{CUT}-{params['head']}-{params['optimizer']}-{number:04d}"
        results[name] = result
        records.append(record_of(result, f"{number:04d}", name))
    phases["trials"] = time.perf_counter() - clock
    folder = RunFolder(root)
    trials = TrialTable(tuple(records)).ranked()
    trials.write(folder.trials)

    clock = time.perf_counter()
    chosen = trials.best()
    assert chosen is not None
    best: TrialResult = results[chosen.name]
    model = assemble(backbone, WEIGHTS, CUT, best, dataset.classes)
    meta = {"backbone": BACKBONE, "weights": WEIGHTS, "config": best.config, "data": recipe.data.model_dump()}
    ExportedModel.save(folder.model, model, dataset.classes, backbone.resize, meta)
    test_files = [(record.path, dataset.classes[record.label]) for record in dataset.split("test")]
    metrics = evaluate_run(root, test_files, internal_classes=recipe.data.imagenet_classes)
    phases["export_and_test"] = time.perf_counter() - clock
    Summary(
        recipe=recipe.name,
        stop_reason="search_space",
        wall_seconds=time.perf_counter() - started,
        trials=TrialCounts(done=len(records), complete=len(records)),
        best=BestTrial(
            trial=chosen.name, config=best.config, val_accuracy=best.best_val_accuracy, test_top1=metrics["top1"]
        ),
        phases=phases,
        cache=CacheUse(cache_hits=stats.reused, cache_misses=stats.computed),
    ).write(folder.summary)
    audit_run(folder.root)  # as the search does before its report
    return BuiltRun(root, recipe_path, cache_dir, dataset)
