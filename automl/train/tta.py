"""Flip test-time augmentation inside the exported model: probabilities averaged over the photo and its mirror.

The wrapper is a plain functional model (the classifier applied twice with shared weights, the registered
`automl>HorizontalFlip` layer, Keras' `Average`), so it saves, loads in safe mode and exports to SavedModel and
TFLite like any assembled model. It costs two forward passes per photo; the search adds it only when the
out-of-fold results show a gain (`benchmarks/finetune.py` measures it on trashnet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def with_flip_tta(model: keras.Model, temperature: float = 1.0) -> keras.Model:
    """`model` (pixels → class probabilities) averaged over the input and its horizontal mirror, then recalibrated
    by `temperature` (softmax(log p / T)) when it is not 1: an ensemble's blend temperature goes after the flip
    average, so the exported model computes what the search scored (the members' view-averaged probabilities,
    blended, recalibrated)."""
    import keras

    from automl.backbones.layers import HorizontalFlip
    from automl.export.layers import ProbabilityTemperature

    pixels = keras.Input(shape=model.input_shape[1:], name="pixels")
    mirrored = HorizontalFlip(name="mirror")(pixels)
    probabilities = keras.layers.Average(name="flip_average")([model(pixels), model(mirrored)])
    if temperature != 1.0:
        probabilities = ProbabilityTemperature(temperature, name="flip_average_temperature")(probabilities)
    return keras.Model(pixels, probabilities, name=f"{model.name}_flip_tta")
