"""Preprocessing as a serializable Keras layer, so exported models take raw pixels and load in safe mode.

A `Lambda` layer would make `keras.saving.load_model(..., safe_mode=True)` refuse the model; this layer
is registered under the `automl` package and is available as soon as `automl.backbones` is imported.
"""

from __future__ import annotations

from typing import Any

import keras

from automl.backbones.base import PREPROCESSING_MODES, PreprocessingMode

# mode -> (per-channel offset subtracted, per-channel divisor, whether RGB is reversed to BGR first)
_MODES: dict[PreprocessingMode, tuple[tuple[float, float, float], tuple[float, float, float], bool]] = {
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), False),
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False),
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0), False),
}
"""raw: pixels unchanged; tf: x/127.5 - 1; torch: ImageNet mean/std on x/255; caffe: RGB to BGR minus the
ImageNet BGR mean; lite: (x - 127) / 128 (EfficientNet-Lite). One entry per `PREPROCESSING_MODES`."""


@keras.saving.register_keras_serializable(package="automl")
class Preprocess(keras.layers.Layer):
    """Maps float32 RGB pixels in [0, 255] to what a backbone expects: (x[, ::-1] - offset) / divisor."""

    def __init__(self, mode: PreprocessingMode, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {', '.join(PREPROCESSING_MODES)}")
        self.mode: PreprocessingMode = mode
        offset, divisor, self._bgr = _MODES[mode]
        self._offset = keras.ops.convert_to_tensor(offset, dtype=self.compute_dtype)
        self._divisor = keras.ops.convert_to_tensor(divisor, dtype=self.compute_dtype)

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self._bgr:
            x = keras.ops.flip(x, axis=-1)
        return (x - self._offset) / self._divisor

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="automl")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images (B, H, W, C) left to right: the second pass of flip test-time augmentation
    (`automl.train.tta`). Keras' `RandomFlip` flips only while training, and at random."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=-2)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape
