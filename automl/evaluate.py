"""Evaluate an exported model on labelled photos: the metrics of `automl.metrics` plus what went wrong.

`evaluate_files` scores any list of (photo, class name) pairs; `evaluate_folder` builds that list from a
class-per-folder dataset (optionally only one split of it, reproducing the search's split from the
model's description); `evaluate_run` is what the search calls once on the test split: it writes
`metrics.json` with the test metrics and the SavedModel/TFLite checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from automl.errors import InputError
from automl.exported import ExportedModel
from automl.metrics import classification_metrics

Split = Literal["all", "train", "val", "test"]
CHUNK = 256
"""Photos decoded and predicted at a time: bounds memory on large folders."""
DEFAULT_SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 0, "max_per_class": None}
METRICS_FILE = "metrics.json"
RUN_MODEL_DIR = "model"

LabelledFile = tuple[str | os.PathLike[str], str]


def _class_indices(model: ExportedModel, files: Sequence[LabelledFile]) -> list[int]:
    index = {label: i for i, label in enumerate(model.labels)}
    unknown = sorted({label for _, label in files} - set(index))
    if unknown:
        raise InputError(
            f"classes the model does not know: {', '.join(unknown)}",
            hint=f"the model's classes are: {', '.join(model.labels)}",
        )
    return [index[label] for _, label in files]


def _score(
    model: ExportedModel, files: Sequence[LabelledFile], keep_images: bool
) -> tuple[list[str], np.ndarray, np.ndarray, list[dict[str, str]], np.ndarray | None]:
    """Decode and predict in chunks: (files used, their class indices, probabilities, errors, images)."""
    targets = dict(zip((os.fspath(p) for p, _ in files), _class_indices(model, files), strict=True))
    used: list[str] = []
    chunks: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    errors: list[dict[str, str]] = []
    for start in range(0, len(files), CHUNK):
        names, images, failed = model.decode_files(p for p, _ in files[start : start + CHUNK])
        used += names
        errors += failed
        chunks.append(model.predict_arrays(images))
        if keep_images:
            kept.append(images)
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, len(model.labels)), np.float32)
    y_true = np.array([targets[name] for name in used], dtype=np.int64)
    return used, y_true, probabilities, errors, (np.concatenate(kept) if keep_images and kept else None)


def _misclassified(
    model: ExportedModel, used: list[str], y_true: np.ndarray, probabilities: np.ndarray
) -> list[dict[str, Any]]:
    """Wrong top-1 predictions, most confident first (those are the ones worth looking at)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.nonzero(predicted != y_true)[0]
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    return [
        {
            "file": used[i],
            "true": model.labels[y_true[i]],
            "predicted": model.labels[predicted[i]],
            "score": round(float(probabilities[i, predicted[i]]), 6),
        }
        for i in wrong
    ]


def evaluate_files(
    model: ExportedModel, files: Sequence[LabelledFile], *, internal_classes: Iterable[str] = ()
) -> dict[str, Any]:
    """Metrics on (photo, class name) pairs, with the misclassified photos and the unreadable ones."""
    used, y_true, probabilities, errors, _ = _score(model, files, keep_images=False)
    if not used:
        raise InputError(f"none of the {len(files)} photos could be read", hint="see the errors listed per file")
    metrics = classification_metrics(y_true, probabilities, model.labels, internal_classes=internal_classes)
    return {**metrics, "misclassified": _misclassified(model, used, y_true, probabilities), "skipped": errors}


def folder_files(model: ExportedModel, folder: str | os.PathLike[str], split: Split = "all") -> list[LabelledFile]:
    """The usable photos of a class-per-folder dataset, optionally only one split of it.

    The split is the search's own (content-hash based), with the fractions and seed the model was
    trained with (`data` in its description, as in the recipe; 0.7/0.15/0.15, seed 0 otherwise).
    """
    from automl.data.dataset import scan_dataset
    from automl.paths import resolve_dataset

    settings = {**DEFAULT_SPLIT, **{k: v for k, v in model.meta.get("data", {}).items() if k in DEFAULT_SPLIT}}
    dataset = scan_dataset(resolve_dataset(folder), **settings)
    records = dataset.records if split == "all" else dataset.split(split)
    return [(record.path, dataset.classes[record.label]) for record in records]


def evaluate_folder(
    model: ExportedModel,
    folder: str | os.PathLike[str],
    *,
    split: Split = "all",
    internal_classes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """`automl evaluate`: metrics on a dataset folder; internal classes default to the model's recipe's."""
    if internal_classes is None:
        internal_classes = model.meta.get("data", {}).get("imagenet_classes", [])
    files = folder_files(model, folder, split)
    if not files:
        raise InputError(f"{folder}: no usable photos in split {split!r}")
    return {"split": split, **evaluate_files(model, files, internal_classes=internal_classes)}


def evaluate_run(
    run_dir: str | os.PathLike[str],
    test_files: Sequence[LabelledFile],
    *,
    internal_classes: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the run's exported model on the test split, export and check the other runtimes, write metrics.json.

    The SavedModel and both TFLite models are checked on the same decoded test photos, so their
    accuracy differences to Keras are exact, not estimated.
    """
    run = Path(run_dir)
    model = ExportedModel.load(run / RUN_MODEL_DIR)
    used, y_true, probabilities, errors, images = _score(model, test_files, keep_images=True)
    if not used:
        raise InputError(f"{run}: none of the {len(test_files)} test photos could be read")
    metrics = {
        "split": "test",
        **classification_metrics(y_true, probabilities, model.labels, internal_classes=internal_classes),
        "misclassified": _misclassified(model, used, y_true, probabilities),
        "skipped": errors,
        "runtimes": model.export_runtimes(images, y_true),
        **(extra or {}),
    }
    staging = run / f".{METRICS_FILE}.tmp"
    staging.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    staging.replace(run / METRICS_FILE)
    return metrics
