"""Cosine geometry of pooled vectors: near-duplicate pairs and groups, and how far a photo is from every class.

Vectors are centred on the dataset's mean before the cosine: pooled ReLU6 activations are all non-negative, so raw
cosines of unrelated photos already sit high and bunch up; centred, unrelated photos spread around 0 and
near-copies stay near 1 (numbers in the constants' docstrings, from `python -m benchmarks.audit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_DUPLICATE_COSINE = 0.90
"""Centred cosine above which two photos count as near-duplicates (EfficientNet-Lite0 pooled vectors).

Measured (benchmarks/RESULTS.md, "Dataset audit"): the same photo re-encoded as JPEG quality 60, resized to
60 %, or centre-cropped to 85 %: 5th percentile of its cosine to the original 0.93-0.97; the nearest other photo
of a DIFFERENT class (never the same picture): 99.9th percentile 0.75-0.80 on animals10, trashnet and
natural_images. 0.90 sits between the two with room on both sides.
"""
OUTLIER_MAD = 4.0
"""A photo is an outlier when its cosine to the nearest class centroid is this many robust standard deviations
(1.4826 x median absolute deviation) below the dataset's median. A relative rule, since raw levels differ per
backbone and dataset; measured: photos of another dataset (trashnet among animals10 and the reverse) fall below
it at 90-100 %, the set's own photos at about 1 %."""
_BLOCK = 2048


def centred_unit_rows(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus `mean` (default: their own mean), scaled to unit length (float32)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    centred = x - (x.mean(axis=0) if mean is None else mean)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def pairs_above(unit: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair (i < j) whose cosine is at least `threshold`, computed in row blocks (memory O(block x N))."""
    found: list[tuple[int, int, float]] = []
    for start in range(0, len(unit), _BLOCK):
        block = unit[start : start + _BLOCK] @ unit.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + row < col:
                found.append((start + row, col, float(block[row, col])))
    return found


def nearest_other(unit: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the index and cosine of its most similar other row (among rows where `mask` is False)."""
    best = np.full(len(unit), -np.inf, dtype=np.float32)
    where = np.zeros(len(unit), dtype=np.int64)
    for start in range(0, len(unit), _BLOCK):
        block = unit[start : start + _BLOCK] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        if mask is not None:
            block[mask[start : start + _BLOCK]] = -np.inf
        where[start : start + len(block)] = block.argmax(axis=1)
        best[start : start + len(block)] = block.max(axis=1)
    return where, best


def group_labels(count: int, pairs: list[tuple[int, int, float]]) -> np.ndarray:
    """Connected components of the near-duplicate graph: one label per row (singletons have their own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return np.arange(count)
    i, j, _ = zip(*pairs, strict=True)
    graph = coo_matrix((np.ones(len(i)), (np.asarray(i), np.asarray(j))), shape=(count, count))
    return connected_components(graph, directed=False)[1]


@dataclass(frozen=True)
class ClassDistance:
    """Each photo's cosine to its nearest class centroid, which class that is, and the outlier verdict."""

    similarity: np.ndarray
    nearest_class: np.ndarray
    cutoff: float
    outlier: np.ndarray


def class_distance(unit: np.ndarray, labels: np.ndarray, num_classes: int, mad: float = OUTLIER_MAD) -> ClassDistance:
    """Centroids (mean unit vector of each class) and every photo's cosine to the nearest one; see OUTLIER_MAD.

    A photo's own class centroid includes the photo; on classes of dozens of photos that lifts it by about
    1/size, too little to hide a photo of nothing here.
    """
    centroids = np.zeros((num_classes, unit.shape[1]), dtype=np.float32)
    for label in range(num_classes):
        members = unit[labels == label]
        if len(members):
            mean = members.mean(axis=0)
            centroids[label] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    cosines = unit @ centroids.T
    nearest = cosines.argmax(axis=1)
    similarity = cosines.max(axis=1)
    median = float(np.median(similarity))
    spread = 1.4826 * float(np.median(np.abs(similarity - median)))
    cutoff = median - mad * spread
    return ClassDistance(similarity, nearest, cutoff, similarity < cutoff)
