"""automl.export.layers: the in-graph crop/resize equals Pillow's; temperature and blend are what they say."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.data.images import decode_image
from automl.data.resize import Resize
from automl.export.layers import CropResize, ProbabilityTemperature, Temperature, WeightedAverage


def _square(photo: Path) -> np.ndarray:
    full = decode_image(photo.read_bytes())
    h, w, _ = full.shape
    side = min(h, w)
    return full[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]


@pytest.mark.parametrize(("size", "fraction", "resample"), [(224, 0.875, "bicubic"), (120, 0.6, "bilinear")])
def test_crop_resize_equals_pillows_decode_up_to_one_level(animals10: Path, size, fraction, resample):
    """Pillow rounds its fixed-point sums a little differently: under 1 % of the values one level apart (0.2 % seen)."""
    for photo in sorted((animals10 / "cat").iterdir())[:3]:
        square = _square(photo)
        png = io.BytesIO()
        Image.fromarray(square).save(png, "PNG")
        expected = decode_image(png.getvalue(), Resize(size, fraction, resample)).astype(np.float32)
        got = np.asarray(CropResize(len(square), size, fraction, resample)(square[None].astype(np.float32)))[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1.0 and (got != expected).mean() < 0.01


def test_temperature_and_weighted_average():
    logits = np.array([[2.0, -4.0]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(Temperature(2.0)(logits)), [[1.0, -2.0]])
    blended = WeightedAverage([3.0, 1.0])([np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32)])
    np.testing.assert_allclose(np.asarray(blended), [[0.75, 0.75]])
    sharpened = np.asarray(ProbabilityTemperature(0.5)(np.array([[0.6, 0.3, 0.1]], dtype=np.float32)))
    np.testing.assert_allclose(sharpened, [[0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46]], rtol=1e-5)  # p² renormalised
    with pytest.raises(ValueError, match="positive"):
        Temperature(0.0)
    with pytest.raises(ValueError, match="non-negative"):
        WeightedAverage([1.0, -1.0])
