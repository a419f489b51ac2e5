"""Cosine geometry of pooled vectors: near-duplicate pairs and groups, and how far a photo is from every class.

Vectors are centred on the dataset's mean before the cosine: pooled ReLU6 activations are all non-negative, so raw
cosines of unrelated photos already sit high and bunch up; centred, unrelated photos spread around 0 and
near-copies stay near 1 (numbers in the constants' docstrings, from `python -m benchmarks.audit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_DUPLICATE_COSINE = 0.90
"""Centred cosine at or above which two photos count as near-duplicates (EfficientNet-Lite0 pooled vectors).

Measured (benchmarks/RESULTS.md, "Dataset audit"; photos of at most 288 px): a photo's own copy re-encoded as JPEG
quality 60 keeps a median cosine of 0.90-0.95 to it, resized to 60 % or centre-cropped to 85 % 0.84-0.89; the most
similar photo of ANOTHER class (never the same picture) reaches at most 0.59 (animals10), 0.64 (natural_images),
0.71 (trashnet). Looked at by eye: pairs at 0.80-0.87 include DIFFERENT people's faces (natural_images `person`)
and different photos of a lion or spider; at 0.90 and above they are the same picture re-cropped or re-encoded,
or frames of one rotating fruit (natural_images `fruit`). 0.85 also chains faces into groups of 100+ photos; at
0.90 the largest group is 44 frames of one fruit. So 0.90: few false pairs, plain re-encodes found, about half of
the heavily resized or cropped copies missed (the price of not grouping look-alikes).
"""
OUTLIER_NEIGHBOURS = 5
OUTLIER_MAD = 2.0
"""A photo is an outlier when its cosine to its 5th most similar other photo lies more than 2 robust standard
deviations (1.4826 x median absolute deviation) below the dataset's median of that cosine: nothing here looks
like it. Relative, since the levels differ per backbone and dataset. Measured (benchmarks/RESULTS.md): 100 photos
of another set put among a set's own flagged 96-100 % (trashnet in animals10 and natural_images, animals10 or
natural_images in trashnet), the sets' own photos 0.2-2.5 %; at 3 SD the intruders fell to 0-21 % on three of
four pairs. The 5th neighbour, not the 1st: a photo and its own near-copy must not vouch for each other. A
class-centroid rule was tried first and separated worse (trashnet photos among animals10 flagged 100 % at 2 SD
but 0 % at 3 SD, animals10 photos among trashnet 42 % at 2 SD)."""
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
class Isolation:
    """Each photo's cosine to its k-th most similar other photo, its most similar photo, and the outlier verdict."""

    similarity: np.ndarray
    nearest: np.ndarray
    cutoff: float
    outlier: np.ndarray


def knn_similarity(
    query: np.ndarray, reference: np.ndarray, k: int, *, same: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each query row to its k-th most similar reference row, and the index of the most similar one.

    `same`: query IS reference, so a row never counts as its own neighbour.
    """
    kth = np.empty(len(query), dtype=np.float32)
    nearest = np.empty(len(query), dtype=np.int64)
    k = min(k, len(reference) - (1 if same else 0))
    for start in range(0, len(query), _BLOCK):
        block = query[start : start + _BLOCK] @ reference.T
        if same:
            block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        nearest[start : start + len(block)] = block.argmax(axis=1)
        kth[start : start + len(block)] = -np.partition(-block, k - 1, axis=1)[:, k - 1]
    return kth, nearest


def isolation(unit: np.ndarray, k: int = OUTLIER_NEIGHBOURS, mad: float = OUTLIER_MAD) -> Isolation:
    """Outliers by the robust rule of OUTLIER_MAD on the cosine to the k-th nearest other photo."""
    similarity, nearest = knn_similarity(unit, unit, k, same=True)
    cutoff = robust_cutoff(similarity, mad)
    return Isolation(similarity, nearest, cutoff, similarity < cutoff)


def robust_cutoff(values: np.ndarray, mad: float = OUTLIER_MAD) -> float:
    """median - mad x 1.4826 x median absolute deviation (a standard deviation that outliers cannot inflate)."""
    median = float(np.median(values))
    return median - mad * 1.4826 * float(np.median(np.abs(values - median)))
