"""Synthetic trial inputs for the training tests: real arrays with a known answer."""

from __future__ import annotations

import numpy as np

from automl.train import TrialData


def separable(classes: int = 6, features: int = 64, train: int = 240, val: int = 90, seed: int = 0) -> TrialData:
    """Gaussian blobs around well-apart class centres: every head must get nearly all of val right."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, features))

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, count)
        return (centres[labels] + rng.normal(size=(count, features))).astype(np.float32), labels

    (x_train, y_train), (x_val, y_val) = draw(train), draw(val)
    return TrialData(x_train, y_train, x_val, y_val, classes)
