"""automl.selection.folds: deterministic, duplicate-safe, stable under additions, stratified enough."""

import hashlib

import numpy as np
import pytest

from automl.selection.folds import assign_folds, fold_indices


def _sha(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()


def test_folds_are_a_function_of_bytes_and_seed():
    sha1s = [_sha(i) for i in range(200)]
    labels = [i % 4 for i in range(200)]
    first = assign_folds(sha1s, labels, k=5, seed=3)
    assert np.array_equal(first, assign_folds(sha1s, labels, k=5, seed=3))
    assert not np.array_equal(first, assign_folds(sha1s, labels, k=5, seed=4))
    shuffled = np.random.default_rng(0).permutation(200)
    again = assign_folds([sha1s[i] for i in shuffled], [labels[i] for i in shuffled], k=5, seed=3)
    assert np.array_equal(again, first[shuffled])


def test_duplicates_share_a_fold_and_new_photos_move_none():
    sha1s = [_sha(i) for i in range(300)]
    labels = [i % 3 for i in range(300)]
    folds = assign_folds([*sha1s, sha1s[7]], [*labels, labels[7]], k=5, seed=0)
    assert folds[-1] == folds[7]
    grown = assign_folds(sha1s + [_sha(i) for i in range(300, 400)], labels + [i % 3 for i in range(100)], k=5)
    assert np.array_equal(grown[:300], assign_folds(sha1s, labels, k=5))


def test_every_fold_holds_every_class_of_at_least_k_images():
    sha1s = [_sha(i) for i in range(105)]
    labels = [0] * 100 + [1] * 5  # a class of exactly k images
    folds = assign_folds(sha1s, labels, k=5, seed=1)
    for label in (0, 1):
        assert set(folds[np.asarray(labels) == label]) == set(range(5))
    counts = np.bincount(folds[:100], minlength=5)
    assert counts.min() >= 10  # stratified in expectation: 20 a fold, far from empty
    for train, held_out in fold_indices(folds, 5):
        assert not set(train) & set(held_out) and len(train) + len(held_out) == 105


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="k >= 2"):
        assign_folds([_sha(0)], [0], k=1)
    with pytest.raises(ValueError, match="labels"):
        assign_folds([_sha(0)], [0, 1])


def test_filling_a_class_s_empty_folds_never_separates_images_sharing_a_key() -> None:
    """Six images of one class, three of them one near-duplicate group: over many seeds the group's three images
    always share a fold, while the class still fills as many folds as its free images allow."""
    keys = ["group", "group", "group", "a", "b", "c"]
    for seed in range(200):
        folds = assign_folds(keys, [0] * len(keys), k=5, seed=seed)
        assert len(set(folds[:3].tolist())) == 1, seed
