"""Classification metrics the transfer-learning studies reported, as one JSON-ready dictionary.

Top-1 and top-5 accuracy, per-class accuracy with precision/recall/F1, the confusion matrix, the
histogram of per-class accuracy in 10 % bins, the most confused pairs, and separate averages for
"internal" classes (ones ImageNet-1k already knows) and "external" ones: the studies found transfer
learning behaves differently on the two, so a single average hides what matters.

Pure NumPy on purpose: the search, `automl evaluate` and the report all call it, none needs TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from automl.errors import InputError

HISTOGRAM_EDGES = tuple(range(0, 101, 10))
"""Bin edges, in percent, of the per-class accuracy histogram; the last bin includes 100 %."""
CALIBRATION_BINS = 15
"""Equal-width confidence bins of the expected calibration error, as Guo et al. (2017) used."""
PROBABILITY_FLOOR = 1e-15
"""Probabilities are clipped here before the log of the log-loss, as scikit-learn does: one 0 is not infinite."""


def top_k_hits(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> np.ndarray:
    """Whether each sample's true class is among its `k` highest scores (ties broken by index)."""
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return (top == y_true[:, None]).any(axis=1)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (z=1.96): how far a test accuracy could move by chance.

    On the small test splits this tool is used with (a hundred photos: one photo is a point of top-1),
    the interval is the honest way to read a single accuracy; Wilson's stays inside [0, 1] and behaves
    near 100 %, where the normal approximation collapses to zero width.
    """
    if n <= 0:
        raise InputError("a confidence interval needs at least one sample")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class; row sums are the class counts."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def accuracy_histogram(class_accuracies: Iterable[float]) -> list[int]:
    """How many classes fall in each 10 % bin of accuracy ([0,10), ..., [90,100]); sums to the class count."""
    percent = np.asarray(list(class_accuracies), dtype=np.float64) * 100.0
    counts, _ = np.histogram(percent, bins=np.asarray(HISTOGRAM_EDGES, dtype=np.float64))
    return [int(c) for c in counts]


def most_confused_pairs(matrix: np.ndarray, labels: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells, largest first: which true class is most often taken for which other one."""
    support = matrix.sum(axis=1)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = np.lexsort((cols, rows, -off[rows, cols]))[:limit]
    return [
        {
            "true": labels[rows[i]],
            "predicted": labels[cols[i]],
            "count": int(off[rows[i], cols[i]]),
            "rate": float(off[rows[i], cols[i]] / support[rows[i]]),
        }
        for i in order
    ]


def log_loss(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class (natural log): the proper score selection ranks by."""
    picked = probabilities[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0)).mean())


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """The reliability diagram's data: per equal-width bin of top-1 confidence, its mean confidence, accuracy, count.

    Bin i holds confidences in (i/bins, (i+1)/bins] (the first also holds 0). Empty bins are kept with
    null confidence and accuracy, so the list always has `bins` entries in order.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
                "count": count,
            }
        )
    return rows


def expected_calibration_error(bins: Sequence[dict]) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the reliability bins (0 is perfect)."""
    total = sum(row["count"] for row in bins)
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in bins if row["count"]) / total)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with 0 where the denominator is 0 (a class never predicted has precision 0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _group_summary(
    members: list[int], hits1: np.ndarray, hits5: np.ndarray, y_true: np.ndarray, accuracies: np.ndarray, labels
) -> dict[str, Any] | None:
    """Sample-level top-1/top-5 and the mean per-class accuracy over one group of classes."""
    present = [c for c in members if (y_true == c).any()]
    if not present:
        return None
    mask = np.isin(y_true, present)
    return {
        "classes": [labels[c] for c in present],
        "n": int(mask.sum()),
        "top1": float(hits1[mask].mean()),
        "top5": float(hits5[mask].mean()),
        "mean_class_accuracy": float(accuracies[present].mean()),
    }


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    internal_classes: Iterable[str] = (),
    top_k: int = 5,
    confused_limit: int = 10,
) -> dict[str, Any]:
    """Every metric of the reference studies for one labelled set, as a JSON-ready dictionary.

    `y_true` holds class indices into `labels`; `probabilities` is (N, len(labels)). Classes with no
    sample are kept in the matrix and the per-class table (support 0) but left out of the averages and
    the histogram, whose counts therefore sum to the number of classes present. `internal_classes`
    names the ImageNet-1k classes; with none given, `internal` and `external` are null. `log_loss` and
    `calibration` (ECE over 15 confidence bins, and the bins: the reliability diagram) say whether the
    scores can be read as probabilities.
    """
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(labels)
    if probs.ndim != 2 or probs.shape != (len(y), n_classes):
        raise InputError(f"probabilities have shape {probs.shape}; expected ({len(y)}, {n_classes}) for the labels")
    if len(y) == 0:
        raise InputError("no labelled samples to evaluate", hint="check that the folder has images of known classes")
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError(f"a true class index is outside 0..{n_classes - 1}")
    unknown = sorted(set(internal_classes) - set(labels))
    if unknown:
        raise InputError(f"internal (ImageNet-1k) classes not among the labels: {', '.join(unknown)}")

    predicted = probs.argmax(axis=1)
    reliability = reliability_bins(y, probs)
    hits1 = predicted == y
    hits5 = top_k_hits(y, probs, top_k)
    matrix = confusion_matrix(y, predicted, n_classes)
    support = matrix.sum(axis=1)
    true_positives = np.diag(matrix)
    recall = _safe_ratio(true_positives, support)
    precision = _safe_ratio(true_positives, matrix.sum(axis=0))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    class_top5 = np.array([hits5[y == c].mean() if support[c] else 0.0 for c in range(n_classes)])
    present = support > 0
    internal = set(internal_classes)

    per_class = [
        {
            "label": labels[c],
            "support": int(support[c]),
            "accuracy": float(recall[c]),
            "top5": float(class_top5[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "internal": (labels[c] in internal) if internal else None,
        }
        for c in range(n_classes)
    ]
    groups: dict[str, dict[str, Any] | None] = {"internal": None, "external": None}
    if internal:
        inside = [c for c in range(n_classes) if labels[c] in internal]
        outside = [c for c in range(n_classes) if labels[c] not in internal]
        groups = {
            "internal": _group_summary(inside, hits1, hits5, y, recall, labels),
            "external": _group_summary(outside, hits1, hits5, y, recall, labels),
        }
    return {
        "n": len(y),
        "labels": list(labels),
        "top_k": top_k,
        "top1": float(hits1.mean()),
        "top5": float(hits5.mean()),
        "top1_ci95": list(wilson_interval(int(hits1.sum()), len(y))),
        "top5_ci95": list(wilson_interval(int(hits5.sum()), len(y))),
        "macro": {
            "accuracy": float(recall[present].mean()),
            "precision": float(precision[present].mean()),
            "recall": float(recall[present].mean()),
            "f1": float(f1[present].mean()),
        },
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "histogram": {"edges": list(HISTOGRAM_EDGES), "counts": accuracy_histogram(recall[present])},
        "confused_pairs": most_confused_pairs(matrix, labels, confused_limit),
        **groups,
        "log_loss": log_loss(y, probs),
        "calibration": {"ece": expected_calibration_error(reliability), "bins": reliability},
    }
