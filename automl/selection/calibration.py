"""Temperature scaling (Guo et al. 2017): one scalar T that makes softmax(logits / T) honest probabilities.

Fitted on out-of-fold logits, so no photo's own model sets its temperature. One parameter cannot change
a prediction's ranking (top-k stays the same), only its confidence: the cheapest calibration that does not
overfit a few hundred photos. It also turns the SVM head's margins into probabilities: softmax(margins)
ranks like the margins but its values are not calibrated (misclassified photos scored 0.29-0.46 on
animals10), while softmax(margins / T) with T fitted on OOF margins is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from automl.metrics import expected_calibration_error, log_loss, reliability_bins

LOG_T_BOUNDS = (-6.0, 6.0)
"""T from 0.0025 to 400: margins of an SVM trained on pooled vectors may need either end."""


@dataclass(frozen=True)
class Temperature:
    """The fitted T, and the OOF log-loss and ECE before (T = 1) and after it."""

    temperature: float
    log_loss_before: float
    log_loss_after: float
    ece_before: float
    ece_after: float


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) per row, in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def views_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) of (N, classes) logits, or its mean over views of (views, N, classes)
    logits: what a model with test-time averaging outputs (`automl.train.tta`: each view calibrated, then
    averaged)."""
    z = np.asarray(logits, dtype=np.float64)
    return softmax(z, temperature) if z.ndim == 2 else np.mean([softmax(view, temperature) for view in z], axis=0)


def _nll(log_t: float, logits: np.ndarray, y: np.ndarray) -> float:
    from scipy.special import log_softmax

    if logits.ndim == 3:
        probabilities = views_softmax(logits, float(np.exp(log_t)))[np.arange(len(y)), y]
        return float(-np.log(np.maximum(probabilities, 1e-300)).mean())
    return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> Temperature:
    """T minimising the mean negative log-likelihood of `y_true` under softmax(logits / T) (bounded in log T).

    `logits` are (N, classes) scores from models that never saw the row (OOF), or (views, N, classes) for a
    model averaging its probabilities over test-time views (each view's softmax(z / T), then their mean, as the
    exported model computes it); `y_true` class indices.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if z.ndim not in (2, 3) or z.shape[-2] != len(y) or len(y) == 0:
        raise ValueError(f"logits of shape {z.shape} do not fit {len(y)} labels: expected (N, classes), N > 0")
    if y.min() < 0 or y.max() >= z.shape[-1]:
        raise ValueError(f"a label is outside 0..{z.shape[-1] - 1}")
    if not np.isfinite(z).all():
        raise ValueError("logits hold NaN or infinite values: the model that produced them diverged")
    found = minimize_scalar(_nll, bounds=LOG_T_BOUNDS, args=(z, y), method="bounded", options={"xatol": 1e-6})
    temperature = float(np.exp(found.x))
    before, after = views_softmax(z), views_softmax(z, temperature)
    return Temperature(
        temperature=temperature,
        log_loss_before=log_loss(y, before),
        log_loss_after=log_loss(y, after),
        ece_before=expected_calibration_error(reliability_bins(y, before)),
        ece_after=expected_calibration_error(reliability_bins(y, after)),
    )
