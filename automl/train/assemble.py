"""Join a trial's trained weights with its backbone into the one model a search exports.

pixels [0, 255] → backbone preprocessing + frozen part (up to the cut) → trained rest → head → softmax.
The frozen part comes from `Backbone.extractor`, the rest is rebuilt by `Backbone.trainable_rest` and
the head by `heads.build_network`, the same calls a trial uses, so the trial's weight list loads back
as is. The final softmax turns the svm head's margins into scores that rank like the margins, so
top-k predictions are those of the SVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from automl.errors import InputError
from automl.train.config import TrainConfig

if TYPE_CHECKING:
    import keras

    from automl.backbones.base import Backbone
    from automl.train.trial import TrialResult


def assemble(backbone: Backbone, weights: str, cut: str, trained: TrialResult, labels: Sequence[str]) -> keras.Model:
    """One Keras model from raw RGB pixels (size, size, 3) to class probabilities, ready to save."""
    import keras

    from automl.train.heads import build_network

    if len(labels) != trained.num_classes:
        raise InputError(
            f"assemble: {len(labels)} labels for a trial trained on {trained.num_classes} classes",
            hint="pass the labels of the dataset the trial was trained on, in label-index order",
        )
    model = backbone.build(weights)
    frozen = backbone.extractor(model, [cut])
    frozen.trainable = False
    rest = None if cut == "all" else backbone.trainable_rest(model, cut)
    config = TrainConfig.from_dict(trained.config)
    network = build_network(config, trained.num_classes, trained.input_shape, rest)
    try:
        network.set_weights(trained.weights)
    except ValueError as exc:
        raise InputError(
            f"assemble: the trial's weights do not fit {backbone.name} cut {cut!r} ({exc})",
            hint="assemble with the backbone, weights and cut the trial was trained with",
        ) from exc
    pixels = keras.Input(shape=(backbone.input_size, backbone.input_size, 3), name="pixels")
    activation = frozen(pixels)[cut]
    probabilities = keras.layers.Activation("softmax", name="probabilities")(network(activation))
    return keras.Model(pixels, probabilities, name=f"{backbone.name}_{cut}_{config.head}")
