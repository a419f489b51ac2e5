"""Join a trial's trained weights with its backbone into the one model a search exports.

pixels [0, 255] → backbone preprocessing + frozen part (up to the cut) → trained rest → head →
temperature → softmax. The frozen part comes from `Backbone.extractor`, the rest is rebuilt by
`Backbone.trainable_rest` and the head by `heads.build_network`, the same calls a trial uses, so the
trial's weight list loads back as is. The final softmax turns the svm head's margins into scores that rank
like the margins, so top-k predictions are those of the SVM; with the temperature fitted on out-of-fold
scores (`automl.selection.calibration`) they are also calibrated probabilities.
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


def assemble(
    backbone: Backbone,
    weights: str,
    cut: str,
    trained: TrialResult,
    labels: Sequence[str],
    *,
    temperature: float = 1.0,
) -> keras.Model:
    """One Keras model from raw RGB pixels (size, size, 3) to class probabilities, ready to save."""
    import keras

    from automl.export.layers import Temperature

    if len(labels) != trained.num_classes:
        raise InputError(
            f"assemble: {len(labels)} labels for a trial trained on {trained.num_classes} classes",
            hint="pass the labels of the dataset the trial was trained on, in label-index order",
        )
    model = backbone.build(weights)
    frozen = backbone.extractor(model, [cut])
    frozen.trainable = False
    network = trained_network(backbone, model, cut, trained)
    pixels = keras.Input(shape=(backbone.input_size, backbone.input_size, 3), name="pixels")
    scores = network(frozen(pixels)[cut])
    if temperature != 1.0:  # without one the graph stays what older loaders (only automl>Preprocess) read
        scores = Temperature(temperature, name="temperature")(scores)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(scores)
    head = TrainConfig.from_dict(trained.config).head
    return keras.Model(pixels, probabilities, name=f"{backbone.name}_{cut}_{head}")


def trained_network(backbone: Backbone, model: keras.Model, cut: str, trained: TrialResult) -> keras.Model:
    """The trial's rest + head (cut activation → logits or margins) with its trained weights loaded.

    `model` is the backbone as built (`Backbone.build`): the rest of a deeper cut is copied from it.
    """
    from automl.train.heads import build_network

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
    return network
