"""automl.selection.oof: LR-CV's out-of-fold predictions come from models that never saw the photo; the refit
is one Dense layer. Real Lite0 pooled vectors of animals10 (30 photos a class, from the shared cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from automl.selection.calibration import softmax
from automl.selection.folds import assign_folds, fold_indices
from automl.selection.oof import fit_logistic_cv


@pytest.fixture(scope="module")
def pool(animals10: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, folds) of the development pool (train + val) of a 30-a-class animals10."""
    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.data.dataset import scan_dataset

    dataset = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=30)
    records = [r for r in dataset.records if r.split != "test"]
    backbone, cache = get_backbone("efficientnet_lite0"), BottleneckCache()
    cache.ensure(backbone, "default", ["all"], records, progress=False, executor="local")
    x = cache.load(backbone, "default", "all", [r.sha1 for r in records])
    y = np.array([r.label for r in records])
    return x, y, assign_folds([r.sha1 for r in records], y, k=5, seed=0)


def test_oof_rows_match_a_fresh_fit_on_the_other_folds_only(pool) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, folds = pool
    result = fit_logistic_cv(x, y, folds, num_classes=10, c_grid=(0.003, 0.03))
    assert result.best.log_loss == min(score.log_loss for score in result.scores)
    for train, held in fold_indices(folds, 5):
        manual = make_pipeline(StandardScaler(), LogisticRegression(C=result.best_c, max_iter=1000))
        with threadpool_limits(limits=1):  # busy 2-core machine: a BLAS pool per fit oversubscribes it
            manual.fit(x[train], y[train])
        expected = manual.predict_proba(x[held])
        assert np.abs(result.oof_probabilities[held] - expected).max() < 0.05  # L-BFGS stops at tol 1e-4
        assert (result.oof_probabilities[held].argmax(1) == expected.argmax(1)).mean() >= 0.98
    assert np.allclose(softmax(result.oof_logits), result.oof_probabilities)
    assert result.best.accuracy == pytest.approx((result.oof_probabilities.argmax(1) == y).mean())
    assert result.best.accuracy > 0.8  # real features of 10 animal classes: a broken fit would be near 0.1


def test_a_photo_s_own_fold_labels_never_reach_its_prediction(pool) -> None:
    """Relabel every photo of fold 0 at random: fold 0's OOF rows stay bit for bit, the other folds' do not."""
    x, y, folds = pool
    shuffled = y.copy()
    held = folds == 0
    shuffled[held] = np.random.default_rng(0).permutation(y[held] + 1) % 10
    before = fit_logistic_cv(x, y, folds, num_classes=10, c_grid=(0.1,))
    after = fit_logistic_cv(x, shuffled, folds, num_classes=10, c_grid=(0.1,))
    assert np.array_equal(before.oof_logits[held], after.oof_logits[held])
    assert not np.allclose(before.oof_logits[~held], after.oof_logits[~held])


def test_the_refit_is_one_dense_layer_on_raw_vectors(pool) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, folds = pool
    result = fit_logistic_cv(x, y, folds, num_classes=10, c_grid=(0.03,))
    kernel, bias = result.dense_weights()
    assert kernel.shape == (x.shape[1], 10) and bias.shape == (10,)
    with threadpool_limits(limits=1):
        reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.03, max_iter=1000)).fit(x, y)
    assert np.abs(softmax(x @ kernel + bias) - reference.predict_proba(x)).max() < 1e-3


def test_two_classes_give_two_softmax_columns(pool) -> None:
    x, y, folds = pool
    keep = y < 2
    result = fit_logistic_cv(x[keep], y[keep], folds[keep], c_grid=(0.1,))
    assert result.oof_probabilities.shape == (keep.sum(), 2)
    assert np.allclose(result.oof_probabilities.sum(1), 1.0)
    assert result.predict_proba(x[keep]).shape == (keep.sum(), 2)
    assert result.best.accuracy > 0.8


def test_mismatched_inputs_are_refused(pool) -> None:
    x, y, folds = pool
    with pytest.raises(ValueError, match="must match"):
        fit_logistic_cv(x, y[:-1], folds)
    with pytest.raises(ValueError, match="c_grid"):
        fit_logistic_cv(x, y, folds, c_grid=())
