"""automl.selection.calibration: temperature scaling recovers a known temperature and never changes rankings."""

import numpy as np
import pytest

from automl.selection.calibration import fit_temperature, softmax


def _sampled(true_temperature: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / true_temperature): T is identifiable."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, size=(n, classes))
    probabilities = softmax(logits, true_temperature)
    labels = np.array([rng.choice(classes, p=p) for p in probabilities])
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_recovers_the_temperature_and_lowers_loss_and_ece(true_temperature: float):
    logits, labels = _sampled(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted.temperature == pytest.approx(true_temperature, rel=0.1)
    assert fitted.log_loss_after < fitted.log_loss_before
    assert fitted.ece_after < 0.03 < fitted.ece_before


def test_temperature_keeps_every_ranking():
    logits, labels = _sampled(3.0, n=500)
    fitted = fit_temperature(logits, labels)
    before = np.argsort(softmax(logits), axis=1)
    assert np.array_equal(before, np.argsort(softmax(logits, fitted.temperature), axis=1))


def test_bad_logits_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="do not fit"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))


def test_a_test_time_averaged_model_is_calibrated_in_the_form_it_is_exported():
    """Two views' logits, labels drawn from the mean of each view's softmax(z / 2.5) (what the TTA model outputs):
    the fit recovers 2.5 and `views_softmax` gives those probabilities; fitting log(mean p) instead would not."""
    from automl.selection.calibration import views_softmax

    rng = np.random.default_rng(1)
    views = rng.normal(0.0, 4.0, size=(2, 4000, 5))
    views[1] = views[0] + rng.normal(0.0, 2.0, size=views[0].shape)  # a mirror: close to the photo, not equal
    probabilities = views_softmax(views, 2.5)
    np.testing.assert_allclose(probabilities, (softmax(views[0], 2.5) + softmax(views[1], 2.5)) / 2)
    labels = np.array([rng.choice(5, p=p) for p in probabilities])
    fitted = fit_temperature(views, labels)
    assert fitted.temperature == pytest.approx(2.5, rel=0.1)
    averaged_first = fit_temperature(np.log(views_softmax(views)), labels)
    assert abs(averaged_first.temperature - 2.5) > abs(fitted.temperature - 2.5)
