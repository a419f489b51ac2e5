"""A tiny but real conv net exported like a search exports its best model: for tests of the plumbing around a
model (serving, prediction, runtime export), where a pretrained backbone would only cost time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from automl.data.resize import Resize
from automl.exported import ExportedModel


def save_tiny_model(folder: Path, labels: Sequence[str], resize: Resize, seed: int = 7) -> Path:
    """Rescale → one strided 3×3 conv → global pooling → softmax over `labels`, saved with `ExportedModel.save`."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((resize.size, resize.size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(labels), activation="softmax")(x)
    return ExportedModel.save(folder, keras.Model(inputs, outputs), labels, resize, {"backbone": "tiny"})
