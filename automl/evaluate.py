"""Evaluate an exported model on labelled photos: the metrics of `automl.metrics` plus what went wrong.

`evaluate_files` scores any list of (photo, class name) pairs; `evaluate_folder` builds that list from a
class-per-folder dataset (optionally only one split of it, reproducing the search's split from the
model's description); `evaluate_run` is what the search calls once on the test split: it writes
`metrics.json` with the test metrics and the SavedModel/TFLite checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from automl.errors import InputError
from automl.exported import ExportedModel
from automl.metrics import classification_metrics
from automl.runs import RunFolder, TestMetrics

Split = Literal["all", "train", "val", "test"]
DEFAULT_SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 0, "max_per_class": None}

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


@dataclass
class _Scored:
    """The readable photos' names, class indices and probabilities, the unreadable ones, and (if kept) pixels."""

    used: list[str]
    y_true: np.ndarray
    probabilities: np.ndarray
    errors: list[dict[str, str]]
    images: np.ndarray | None


def _score(model: ExportedModel, files: Sequence[LabelledFile], *, keep_images: bool, where: str = "") -> _Scored:
    """Decode and predict in chunks (`ExportedModel.predict_chunks`); refused, naming `where`, if no photo reads."""
    targets = dict(zip((os.fspath(p) for p, _ in files), _class_indices(model, files), strict=True))
    used: list[str] = []
    chunks: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    errors: list[dict[str, str]] = []
    for chunk in model.predict_chunks(p for p, _ in files):
        used += chunk.files
        errors += chunk.errors
        chunks.append(chunk.probabilities)
        if keep_images:
            kept.append(chunk.images)
    if not used:
        prefix = f"{where}: " if where else ""
        raise InputError(
            f"{prefix}none of the {len(files)} photos could be read", hint="see the errors listed per file"
        )
    return _Scored(
        used=used,
        y_true=np.array([targets[name] for name in used], dtype=np.int64),
        probabilities=np.concatenate(chunks),
        errors=errors,
        images=np.concatenate(kept) if keep_images else None,
    )


def _metrics(model: ExportedModel, scored: _Scored, internal_classes: Iterable[str]) -> dict[str, Any]:
    """The metrics of `automl.metrics`, the misclassified photos and the skipped ones."""
    return {
        **classification_metrics(scored.y_true, scored.probabilities, model.labels, internal_classes=internal_classes),
        "misclassified": _misclassified(model, scored.used, scored.y_true, scored.probabilities),
        "skipped": scored.errors,
    }


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
    return _metrics(model, _score(model, files, keep_images=False), internal_classes)


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
    runtimes: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's exported model on the test split, export and check the other runtimes, write metrics.json.

    Without `runtimes` (a search whose time budget cannot pay for the conversions) only the Keras model is
    tested; `automl evaluate` on the run folder later does the rest.

    The SavedModel and both TFLite models are checked on the same decoded test photos, so their
    accuracy differences to Keras are exact, not estimated.
    """
    folder = RunFolder(Path(run_dir))
    model = ExportedModel.load(folder.model)
    scored = _score(model, test_files, keep_images=True, where=f"{folder.root} (test split)")
    assert scored.images is not None
    metrics = {
        "split": "test",
        **_metrics(model, scored, internal_classes),
        "runtimes": (
            model.export_runtimes(scored.images, scored.y_true, reference=scored.probabilities) if runtimes else None
        ),
        **(extra or {}),
    }
    TestMetrics.model_validate(metrics).write(folder.metrics)
    return metrics
