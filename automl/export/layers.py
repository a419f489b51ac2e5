"""The registered Keras layers of exported models beyond preprocessing: temperature, in-graph crop/resize, blend.

Registered under the `automl` package like `automl>Preprocess`, so a model using them loads in Keras safe
mode once this module is imported (`ExportedModel.load` imports it). None holds weights: each layer's
config is all it needs, and every operation is an element-wise op or a matrix product, so SavedModel and
TFLite conversion keep working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

_FILTERS = {"bicubic": 2.0, "bilinear": 1.0}
"""Pillow's resampling filters and their support (in source pixels at scale 1)."""


def _pillow_kernel(resample: str, x: np.ndarray) -> np.ndarray:
    """Pillow's filter functions (libImaging/Resample.c): Keys bicubic with a = -0.5, and the triangle."""
    x = np.abs(x)
    if resample == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def resample_matrix(in_size: int, out_size: int, start: float, end: float, resample: str) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's resize of the source span [start, end) to `out_size` pixels.

    The same coefficients as Pillow's `precompute_coeffs` (support widened by the scale when shrinking,
    i.e. antialiased; taps outside the image dropped and the rest renormalised), so that a crop/resize
    in the graph equals `Image.resize(..., box=...)` up to Pillow's 8-bit fixed-point rounding.
    """
    if resample not in _FILTERS:
        raise ValueError(f"unknown resample filter {resample!r}; expected one of {', '.join(_FILTERS)}")
    scale = (end - start) / out_size
    filter_scale = max(scale, 1.0)
    support = _FILTERS[resample] * filter_scale
    matrix = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = start + (out + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), in_size)
        taps = np.arange(low, high)
        weights = _pillow_kernel(resample, (taps - centre + 0.5) / filter_scale)
        total = weights.sum()
        matrix[out, low:high] = weights / total if total else weights
    return matrix


@keras.saving.register_keras_serializable(package="automl")
class CropResize(keras.layers.Layer):
    """Centre crop of `fraction` of a square image's side, resized to `out_size`, as `decode_image` would.

    Lets an ensemble take photos decoded once, at its largest member's resize, and feed each smaller
    member the crop and size it was trained on. Two separable matrix products (width, then height, each
    rounded and clipped to 8 bits as Pillow does) on float32 pixels in [0, 255].
    """

    def __init__(self, in_size: int, out_size: int, fraction: float, resample: str = "bicubic", **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
        self.in_size, self.out_size, self.fraction, self.resample = in_size, out_size, fraction, resample
        side = in_size * fraction
        start = (in_size - side) / 2.0
        matrix = resample_matrix(in_size, out_size, start, start + side, resample)
        self._matrix = keras.ops.convert_to_tensor(matrix.astype(np.float32))

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        x = _to_8_bits(keras.ops.einsum("bhwc,ow->bhoc", x, self._matrix))
        return _to_8_bits(keras.ops.einsum("bhwc,oh->bowc", x, self._matrix))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.out_size, self.out_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_size": self.in_size,
            "out_size": self.out_size,
            "fraction": self.fraction,
            "resample": self.resample,
        }


def _to_8_bits(x: Any) -> Any:
    """Round half up and clip to [0, 255], as Pillow stores each pass of a resize in an 8-bit image."""
    return keras.ops.clip(keras.ops.floor(x + 0.5), 0.0, 255.0)


@keras.saving.register_keras_serializable(package="automl")
class Temperature(keras.layers.Layer):
    """Divides logits (or an SVM's margins) by the temperature fitted on out-of-fold scores."""

    def __init__(self, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"a temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)

    def call(self, inputs: Any) -> Any:
        return inputs / self.temperature

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="automl")
class ProbabilityTemperature(Temperature):
    """softmax(log(p) / T) of probabilities p: temperature scaling of an ensemble's blended probabilities.

    Averaging calibrated members leaves the blend underconfident (trashnet: ECE 0.036 for one calibrated
    member, 0.052 for the blend of three); one more temperature, fitted on the blend's OOF probabilities,
    corrects that without changing any ranking.
    """

    def call(self, inputs: Any) -> Any:
        return keras.ops.softmax(super().call(keras.ops.log(keras.ops.maximum(inputs, 1e-30))), axis=-1)


@keras.saving.register_keras_serializable(package="automl")
class WeightedAverage(keras.layers.Layer):
    """Σ wᵢ·xᵢ over its inputs (the members' probabilities), with weights normalised to sum to 1."""

    def __init__(self, mixture: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        values = [float(w) for w in mixture]
        if not values or min(values) < 0 or sum(values) <= 0:
            raise ValueError(f"ensemble weights must be non-negative with a positive sum, got {values}")
        self.mixture = [w / sum(values) for w in values]

    def call(self, inputs: Sequence[Any]) -> Any:
        if len(inputs) != len(self.mixture):
            raise ValueError(f"{len(inputs)} inputs for {len(self.mixture)} weights")
        return sum(weight * x for weight, x in zip(self.mixture, inputs, strict=True))

    def compute_output_shape(self, input_shape: Sequence[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mixture": self.mixture}
