"""Per-phase timings on this machine, like the reference studies' benchmark tables.

Decode per image, bottleneck (frozen backbone forward pass) per image, training time per epoch for each
head on cached vectors, and the exported model's single-image latency (p50/p95) and batch throughput.
Every number comes with the machine it was taken on; a warm-up call precedes each timed loop so
that one-off graph tracing is not counted as per-image cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.errors import InputError

if TYPE_CHECKING:
    from automl.exported import ExportedModel

BATCH = 32


def _timed(call: Callable[[], object], runs: int) -> np.ndarray:
    """Seconds of each of `runs` calls, after one untimed warm-up call."""
    call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return np.asarray(seconds)


def bench_decode(paths: list[Path], resize: Any) -> tuple[dict[str, float], np.ndarray]:
    """Decode + crop + resize of each photo (bytes already read: disk speed is not the product's)."""
    from automl.data.images import decode_image

    blobs = [path.read_bytes() for path in paths]
    start = time.perf_counter()
    pixels = np.stack([decode_image(blob, resize) for blob in blobs])
    seconds = time.perf_counter() - start
    return {
        "images": len(blobs),
        "ms_per_image": 1000 * seconds / len(blobs),
        "images_per_s": len(blobs) / seconds,
    }, pixels


def bench_bottleneck(backbone: Any, weights: str, pixels: np.ndarray, runs: int) -> dict[str, float]:
    """The frozen backbone's forward pass (pixels → pooled vector) per image, in batches of up to 32."""
    model = backbone.build(weights)
    batch = pixels[:BATCH].astype(np.float32)
    seconds = _timed(lambda: model(batch, training=False), runs)
    per_image = float(np.median(seconds)) / len(batch)
    return {"batch": len(batch), "ms_per_image": 1000 * per_image, "images_per_s": 1 / per_image}


def bench_training(recipe: Any, backbone: str, epochs: int) -> dict[str, Any]:
    """Seconds per epoch of each of the recipe's heads on the cached vectors (first epoch left out: tracing)."""
    from automl.curve import cached_vectors
    from automl.train import TrialData, baseline_config, train_trial

    vectors, classes, _ = cached_vectors(recipe, backbone, ("train", "val"))
    data = TrialData(*vectors["train"], *vectors["val"], len(classes))
    results = {}
    for head in recipe.search.heads:
        config = {**baseline_config(), "head": head, "epochs": epochs, "backbone": backbone, "cut": "all"}
        history = train_trial(config, data).history
        timed = [epoch["epoch_seconds"] for epoch in history[1:]] or [history[0]["epoch_seconds"]]
        results[head] = {"epoch_seconds": float(np.median(timed)), "epochs_timed": len(timed)}
    return {"train_images": len(data.y_train), "heads": results}


def single_photo_latency(exported: ExportedModel, photo: np.ndarray, runs: int) -> dict[str, float]:
    """Milliseconds to classify one decoded photo (a user waiting on `predict` or `serve`): p50, p95, runs."""
    latency = _timed(lambda: exported.predict_arrays(photo[np.newaxis]), runs) * 1000
    return {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95)), "runs": runs}


def bench_inference(model_path: Path, paths: list[Path], runs: int) -> dict[str, Any]:
    """The exported model as `predict` and `serve` call it: one photo at a time (a user waiting) and batches of
    32 (a folder being tagged). Photos are decoded at the model's own input size first (decoding is timed
    separately, by `bench_decode`)."""
    from automl.exported import ExportedModel

    exported = ExportedModel.load(model_path)
    _, pixels, _ = exported.decode_files(paths)
    if not len(pixels):
        raise InputError(f"none of the {len(paths)} benchmark photos could be decoded")
    batch = pixels[:BATCH]
    batch_seconds = float(np.median(_timed(lambda: exported.predict_arrays(batch), max(3, runs // 10))))
    return {
        "model": str(model_path),
        "backbone": exported.meta.get("backbone"),
        "latency_ms": single_photo_latency(exported, pixels[0], runs),
        "batch": len(batch),
        "throughput_images_per_s": len(batch) / batch_seconds,
    }


def run_bench(recipe: Any, *, model: Path | None = None, images: int = 64, runs: int = 30, epochs: int = 3) -> dict:
    """`automl bench`: every phase on the recipe's first backbone, and the exported model when there is one."""
    from automl.backbones.registry import get_backbone
    from automl.data.dataset import Dataset
    from automl.machine import describe
    from automl.runs import latest

    if images < 1 or runs < 1 or epochs < 1:
        raise InputError("--images, --runs and --epochs must be at least 1")
    name = recipe.search.backbones[0]
    backbone = get_backbone(name)
    dataset = Dataset.from_recipe(recipe.data)
    paths = [record.path for record in dataset.split("train")[:images]]
    decode, pixels = bench_decode(paths, backbone.resize)
    result: dict[str, Any] = {
        "recipe": recipe.name,
        "backbone": name,
        "weights": recipe.search.weights,
        "decode": decode,
        "bottleneck": bench_bottleneck(backbone, recipe.search.weights, pixels, max(3, runs // 10)),
        "training": bench_training(recipe, name, epochs),
    }
    if model is None:
        newest = latest(recipe.output.folder, recipe.name, with_model=True)
        model = newest.model if newest else None
    result["inference"] = bench_inference(model, paths, runs) if model else None
    result["machine"] = describe()
    return result
