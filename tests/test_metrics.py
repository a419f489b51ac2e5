"""automl.metrics: the log-loss and calibration keys (ECE, reliability bins) of classification_metrics."""

import numpy as np
import pytest

from automl.metrics import classification_metrics, expected_calibration_error, log_loss, reliability_bins

LABELS = ["cat", "dog"]


def test_reliability_bins_and_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (right): bins (13/15, 14/15] and (8/15, 9/15]
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    bins = reliability_bins(y, probabilities)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    high = bins[13]
    assert high["count"] == 2 and high["accuracy"] == 0.5 and high["confidence"] == pytest.approx(0.9)
    low = bins[8]
    assert low["count"] == 2 and low["accuracy"] == 1.0 and low["confidence"] == pytest.approx(0.575)
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None
    # ECE = (2 * |0.5 - 0.9| + 2 * |1.0 - 0.575|) / 4
    assert expected_calibration_error(bins) == pytest.approx((0.8 + 0.85) / 4)


def test_a_calibrated_model_has_a_small_ece_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    right = rng.uniform(size=confidence.size) < confidence  # right exactly as often as it says
    y = np.where(right, 0, 1)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(reliability_bins(y, probabilities)) < 0.01
    sharpened = np.stack([np.full_like(confidence, 0.99), np.full_like(confidence, 0.01)], axis=1)
    assert expected_calibration_error(reliability_bins(y, sharpened)) > 0.2


def test_classification_metrics_carries_log_loss_and_calibration_beside_the_old_keys():
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    m = classification_metrics(y, probabilities, LABELS, top_k=1)
    assert m["top1"] == pytest.approx(2 / 3) and "confusion" in m and "histogram" in m
    assert m["log_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.7) + np.log(0.4)) / 3)
    assert m["calibration"]["ece"] == pytest.approx(expected_calibration_error(m["calibration"]["bins"]))
    assert len(m["calibration"]["bins"]) == 15


def test_log_loss_of_a_zero_probability_is_large_but_finite():
    assert 30 < log_loss(np.array([1]), np.array([[1.0, 0.0]])) < 40
