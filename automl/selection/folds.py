"""Cross-validation folds of the development pool, a pure function of each image's bytes and the seed.

Each image gets u = H("fold", seed, sha1) in [0, 1) and lands in fold floor(u * k). So exact duplicates
share a fold, adding photos never moves an old one, and anything derived from an image (its flipped view,
its cached activations) lands in its original's fold. Per class the folds are stratified in expectation;
a class with at least k images gets one image in every fold (the image whose u lies nearest an empty fold's
interval moves there, taken from a fold that keeps at least one, and never one whose key another image shares:
duplicates and near-duplicate groups stay together), as the split does.
Classes with fewer than k images keep their hash folds: some folds then hold none of them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from automl.data.dataset import unit_hash

DEFAULT_FOLDS = 5


def assign_folds(sha1s: Sequence[str], labels: Sequence[int], *, k: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of each image, in the order given."""
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2, got {k}")
    if len(sha1s) != len(labels):
        raise ValueError(f"{len(sha1s)} sha1s but {len(labels)} labels")
    position = np.array([unit_hash(seed, sha1, "fold") for sha1 in sha1s], dtype=np.float64)
    folds = np.minimum((position * k).astype(np.int64), k - 1)
    shared = Counter(sha1s)
    alone = np.array([shared[sha1] == 1 for sha1 in sha1s])  # a duplicate (or group member) never leaves its twins
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    for members in by_class.values():
        if len(members) >= k:
            _fill_empty_folds(np.asarray(members), position, folds, k, alone)
    return folds


def _fill_empty_folds(members: np.ndarray, position: np.ndarray, folds: np.ndarray, k: int, alone: np.ndarray) -> None:
    for fold in range(k):
        counts = np.bincount(folds[members], minlength=k)
        if counts[fold]:
            continue
        low, high = fold / k, (fold + 1) / k
        donors = members[(counts[folds[members]] > 1) & alone[members]]
        if not len(donors):
            continue
        distance = np.maximum(np.maximum(low - position[donors], position[donors] - high), 0.0)
        folds[donors[np.argmin(distance)]] = fold


def fold_indices(folds: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) for each fold, as scikit-learn's `cv=` iterables are."""
    return [(np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)) for fold in range(k)]
