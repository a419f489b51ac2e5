"""automl.report.plots: the reliability diagram renders from classification_metrics' calibration bins."""

import base64
import io

import numpy as np
from PIL import Image

from automl.metrics import classification_metrics
from automl.report.plots import reliability_plot


def test_reliability_plot_is_an_inline_png_of_the_metrics_bins():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=200)
    y = rng.integers(0, 3, 200)
    bins = classification_metrics(y, probabilities, ["a", "b", "c"])["calibration"]["bins"]
    assert any(row["count"] == 0 for row in bins)  # empty bins (confidence < 1/3 is impossible) are drawn around
    uri = reliability_plot(bins)
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "PNG" and image.size == (460, 380)
