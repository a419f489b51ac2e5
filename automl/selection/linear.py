"""Linear heads as one Dense layer on raw pooled vectors: a standardiser folded in, k fold heads averaged.

A logistic regression fitted on standardised vectors, ((x - mean) / scale) @ coef.T + intercept, is the
same affine map as x @ kernel + bias with kernel = (coef / scale).T and bias = intercept - (mean / scale) @
coef.T; folding it keeps the exported head one Dense layer with no Normalization in front. The mean of k
such heads is again one affine map whose logits are the mean of the k heads' logits, so "export the fold
heads averaged" costs nothing at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearHead:
    """logits = x @ kernel + bias, on raw (unstandardised) vectors: kernel (features, classes), bias (classes,)."""

    kernel: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        if self.kernel.ndim != 2 or self.bias.shape != (self.kernel.shape[1],):
            raise ValueError(
                f"a linear head needs kernel (features, classes) and bias (classes,); got {self.kernel.shape}"
                f" and {self.bias.shape}"
            )

    @classmethod
    def from_standardized(
        cls, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray
    ) -> LinearHead:
        """The head of a model fitted on (x - mean) / scale with `coef` (classes, features) and `intercept`.

        A binary scikit-learn model has one row w: pass it as is, and the head gets logits (0, w·x + b),
        which give the same probabilities through a softmax as sigmoid(w·x + b).
        """
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
        if coef.shape[0] == 1:
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        scale = np.asarray(scale, dtype=np.float64)
        if coef.shape[1] != len(scale) or len(np.asarray(mean)) != len(scale):
            raise ValueError(f"coef has {coef.shape[1]} features but the scaler {len(scale)}")
        kernel = (coef / scale).T
        bias = intercept - (np.asarray(mean, dtype=np.float64) / scale) @ coef.T
        return cls(kernel, bias)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.kernel + self.bias


def mean_of_heads(heads: Sequence[LinearHead]) -> LinearHead:
    """One head whose logits are the mean of `heads`' logits (e.g. the k fold heads of a cross-validation)."""
    if not heads:
        raise ValueError("no heads to average")
    shapes = {head.kernel.shape for head in heads}
    if len(shapes) != 1:
        raise ValueError(f"heads of different shapes cannot be averaged: {sorted(shapes)}")
    return LinearHead(np.mean([h.kernel for h in heads], axis=0), np.mean([h.bias for h in heads], axis=0))
