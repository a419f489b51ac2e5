"""LR-CV: multinomial logistic regression on standardised pooled vectors, C chosen by cross-validation.

The honest baseline of a transfer-learning search (Kornblith et al. 2019 fit exactly this on frozen features):
on the development pool (train + val), each fold's model is fitted on the other folds only (scaler included),
so every out-of-fold (OOF) prediction comes from a model that never saw the photo. C is the one
hyper-parameter; the grid's best by OOF log-loss (a proper scoring rule: accuracy ties on small pools) is then
refitted on the whole pool. The refit is exposed as a scaler + coef/intercept and as one Dense layer's kernel and
bias on the raw vectors, so it can become a Keras head without scikit-learn at serving time.

Cost: per fold, the C grid is walked from the strongest regularisation up with L-BFGS warm starts (each C starts
from the previous solution), and folds run in parallel threads with one BLAS thread each: on 2 cores that keeps
both busy without the two pools oversubscribing them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from automl.selection.calibration import softmax
from automl.selection.folds import fold_indices

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

DEFAULT_C_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Inverse L2 strengths for standardised 1,000-2,000-d vectors and 10^2-10^4 photos."""
MAX_ITER = 1000
_MISSING_CLASS_MARGIN = 30.0
"""A class absent from a fold's training rows gets an intercept this far below the lowest seen one."""


@dataclass(frozen=True)
class CScore:
    """Out-of-fold quality of one C over the whole pool."""

    c: float
    log_loss: float
    accuracy: float


@dataclass
class LogisticCV:
    """OOF predictions of the best C, the score of every C, and the refit on the whole pool."""

    num_classes: int
    folds: np.ndarray
    scores: list[CScore]
    best_c: float
    oof_probabilities: np.ndarray
    """(N, classes) float64: row i from the model of the folds other than folds[i]."""
    oof_logits: np.ndarray
    """(N, classes) decision_function of the same models: softmax(oof_logits) == oof_probabilities."""
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    coef: np.ndarray
    """(classes, features) of the refit, on standardised vectors."""
    intercept: np.ndarray

    @property
    def best(self) -> CScore:
        return next(score for score in self.scores if score.c == self.best_c)

    def dense_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Kernel (features, classes) and bias (classes,) of one Dense layer on RAW vectors: scaler folded in."""
        kernel = (self.coef / self.scaler_scale).T
        bias = self.intercept - (self.scaler_mean / self.scaler_scale) @ self.coef.T
        return kernel.astype(np.float32), bias.astype(np.float32)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Logits of the refit for raw vectors."""
        kernel, bias = self.dense_weights()
        return np.asarray(x, dtype=np.float64) @ kernel.astype(np.float64) + bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.decision(x))


def fit_logistic_cv(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    num_classes: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_jobs: int | None = None,
) -> LogisticCV:
    """LR-CV on (x, y) with the given folds (`automl.selection.folds.assign_folds`); see the module docstring.

    `n_jobs`: parallel fold fits (default: the machine's cores, at most the number of folds).
    """
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.metrics import log_loss
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.int64)
    folds = np.asarray(folds, dtype=np.int64)
    if not (len(x) == len(y) == len(folds)):
        raise ValueError(f"x has {len(x)} rows, y {len(y)}, folds {len(folds)}: they must match")
    if not c_grid:
        raise ValueError("c_grid is empty: give at least one C")
    classes = int(num_classes if num_classes is not None else y.max() + 1)
    grid = sorted(float(c) for c in c_grid)
    k = int(folds.max()) + 1
    splits = [(train, held) for train, held in fold_indices(folds, k) if len(held)]
    workers = n_jobs or max(1, min(len(splits), os.cpu_count() or 1))
    # threads, not processes: L-BFGS spends its time in BLAS and scipy, which release the GIL, and threads share
    # the vectors instead of pickling them to workers; one BLAS thread each, set once for the whole pool
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
        per_fold = list(pool.map(lambda split: _fold_path(x, y, split[0], grid, classes), splits))
    logits = np.zeros((len(grid), len(y), classes))
    for (_, held), fold_logits in zip(splits, per_fold, strict=True):
        logits[:, held] = fold_logits[:, held]
    scores = []
    for c, c_logits in zip(grid, logits, strict=True):
        probabilities = softmax(c_logits)
        scores.append(
            CScore(
                c,
                float(log_loss(y, probabilities, labels=list(range(classes)))),
                float((probabilities.argmax(axis=1) == y).mean()),
            )
        )
    best = min(range(len(grid)), key=lambda i: (scores[i].log_loss, -grid[i]))
    scaler, model = _fit(x, y, grid[best])
    coef, intercept = _full_weights(model, classes)
    return LogisticCV(
        num_classes=classes,
        folds=folds,
        scores=scores,
        best_c=grid[best],
        oof_probabilities=softmax(logits[best]),
        oof_logits=logits[best],
        scaler_mean=scaler.mean_.astype(np.float64),
        scaler_scale=scaler.scale_.astype(np.float64),
        coef=coef,
        intercept=intercept,
    )


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[StandardScaler, LogisticRegression]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, max_iter=MAX_ITER)
    with threadpool_limits(limits=1):  # see _fold_path
        model.fit(scaler.transform(x), y)
    return scaler, model


def _fold_path(x: np.ndarray, y: np.ndarray, train: np.ndarray, grid: list[float], classes: int) -> np.ndarray:
    """Logits of every row (only the held-out ones are used) for each C, fitted on `train` rows, warm-started."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x[train])
    scaled = scaler.transform(x)
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    out = np.empty((len(grid), len(x), classes))
    # One BLAS thread per fit, in a worker or in this process alike: measured on 2 busy cores, L-BFGS with the
    # default BLAS pool took 190 s for what one thread per fold did in 22 s (spinning BLAS threads contend).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # the largest C may stop at max_iter: its OOF loss says so
        for index, c in enumerate(grid):
            model.set_params(C=c)
            model.fit(scaled[train], y[train])
            coef, intercept = _full_weights(model, classes)
            out[index] = scaled @ coef.T + intercept
    return out


def _full_weights(model: LogisticRegression, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """coef (classes, features) and intercept over ALL classes, whatever the fitted model saw.

    Binary problems give one row w: as two softmax logits (0, w) they give the same probabilities. A class absent
    from the training rows gets a zero row and an intercept far below the others.
    """
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    seen = np.asarray(model.classes_, dtype=np.int64)
    if len(seen) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    full_coef = np.zeros((classes, coef.shape[1]))
    full_intercept = np.full(classes, intercept.min() - _MISSING_CLASS_MARGIN)
    full_coef[seen], full_intercept[seen] = coef, intercept
    return full_coef, full_intercept
