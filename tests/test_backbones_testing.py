"""check_backbone: every registered backbone conforms, and each kind of breakage is named by its property.

The broken backbones are one small real residual CNN (`TinyNet`) with one method changed each, the way
a plugin author would get it wrong.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest

from automl.backbones.base import Backbone, CutAt, shared_submodel
from automl.backbones.layers import Preprocess
from automl.backbones.registry import get_backbone, load_backbones
from automl.backbones.testing import CHECKS, BackboneCheckFailed, check_backbone
from automl.data.resize import Resize

TINY_SEED = 7


@dataclass
class TinyNet(Backbone):
    """Pixels → stem → block1 → residual block2 → 1x1 head → pooled features; `default` weights from a fixed seed."""

    def _build(self, weights: str) -> keras.Model:
        pixels, x = self.preprocessed_input()
        return self._network(pixels, x, weights)

    def _network(self, pixels: Any, x: Any, weights: str) -> keras.Model:
        layers = keras.layers
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv")(x)
        y = layers.Conv2D(8, 3, padding="same", activation="relu", name="block2_conv1")(x)
        y = layers.Conv2D(8, 3, padding="same", name="block2_conv2")(y)
        x = layers.Add(name="block2_add")([x, y])
        x = layers.Conv2D(self.feature_size, 1, activation="relu", name="head")(x)
        model = keras.Model(pixels, layers.GlobalAveragePooling2D(name="pool")(x), name=self.name)
        if weights == "default":
            model.set_weights(self._default_weights(model))
        return model

    def _default_weights(self, model: keras.Model) -> list[np.ndarray]:
        rng = np.random.default_rng(TINY_SEED)
        return [rng.normal(0.1, 0.2, w.shape).astype("float32") for w in model.get_weights()]

    def _pretrained_id(self, weights: str) -> str:
        return f"tiny-seed{TINY_SEED}"

    def _pretrained_offline(self, weights: str) -> bool:
        return True


def tiny(kind: type[TinyNet] = TinyNet, **changes: Any) -> TinyNet:
    fields: dict[str, Any] = {
        "name": "tiny",
        "resize": Resize(32, 0.875, "bicubic"),
        "feature_size": 16,
        "preprocessing_mode": "torch",
        "cut_at": {"top": CutAt("block2_add"), "half": CutAt("block1_conv")},
    }
    return kind(**{**fields, **changes})


# --- broken plugins: one mistake each --------------------------------------------------------------------


class HandWrittenPreprocessingId(TinyNet):
    @property
    def preprocessing_id(self) -> str:
        return "torch-crop0.875-bicubic-224"  # written for 224, the resize says 32


class IgnoresResizeSize(TinyNet):
    def _build(self, weights: str) -> keras.Model:
        pixels = keras.Input(shape=(40, 40, 3), name="pixels")
        return self._network(pixels, Preprocess("torch")(pixels), weights)


class HardCodesOtherPreprocessing(TinyNet):
    def _build(self, weights: str) -> keras.Model:
        pixels = keras.Input(shape=(self.input_size, self.input_size, 3), name="pixels")
        return self._network(pixels, Preprocess("tf")(pixels), weights)


class RestWithoutTheWeights(TinyNet):
    def trainable_rest(self, model: keras.Model, cut: str) -> keras.Model:
        rest = super().trainable_rest(model, cut)
        return keras.models.clone_model(rest)  # fresh initial weights: not the model's


class RestSharingTheModel(TinyNet):
    def trainable_rest(self, model: keras.Model, cut: str) -> keras.Model:
        if cut == "all":
            return super().trainable_rest(model, cut)
        return shared_submodel(model, self._cut_tensor(model, cut), name="shared")  # training it changes the cache


_calls = itertools.count()


class UnstableWeightsId(TinyNet):
    def _pretrained_id(self, weights: str) -> str:
        return f"tiny-{next(_calls)}"


class UnseededDefaultWeights(TinyNet):
    def _default_weights(self, model: keras.Model) -> list[np.ndarray]:
        return [np.random.default_rng().normal(0, 0.2, w.shape).astype("float32") for w in model.get_weights()]


class LambdaLayer(TinyNet):
    def _build(self, weights: str) -> keras.Model:
        pixels, x = self.preprocessed_input()
        return self._network(pixels, keras.layers.Lambda(lambda t: t * 1.0, name="scale")(x), weights)


BROKEN = {
    "unknown cut name": (tiny(cut_at={"middle": CutAt("block1_conv")}), "fields", "'middle'"),
    "hand-written preprocessing id": (tiny(HandWrittenPreprocessingId), "preprocessing_id", "do not override"),
    "input ignores resize.size": (tiny(IgnoresResizeSize), "input", "(32, 32, 3) from resize.size"),
    "preprocessing differs from the mode": (tiny(HardCodesOtherPreprocessing), "preprocessing", "['tf']"),
    "cut inside a residual block": (
        tiny(cut_at={"top": CutAt("block2_conv1")}),
        "cut_points",
        "single-tensor block boundar",
    ),
    "rest without the model's weights": (tiny(RestWithoutTheWeights), "extractor_then_rest", "differs"),
    "rest sharing the model's weights": (tiny(RestSharingTheModel), "extractor_then_rest", "shares weights"),
    "weights id changes": (tiny(UnstableWeightsId), "weights_id", "changes between two calls"),
    "same id, other weights": (tiny(UnseededDefaultWeights), "weights_id", "twice gives different values"),
    "lambda layer": (tiny(LambdaLayer), "safe_mode", "safe mode"),
}


def test_a_conforming_backbone_passes_with_pretrained_and_random_weights() -> None:
    check_backbone(tiny(), weights="default")
    check_backbone(tiny(), weights="none")


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_backbone_fails_naming_the_broken_property(case: str) -> None:
    backbone, check, fragment = BROKEN[case]
    with pytest.raises(BackboneCheckFailed) as failed:
        check_backbone(backbone, weights="default")
    assert failed.value.check == check, str(failed.value)
    message = str(failed.value)
    assert message.startswith(f"backbone 'tiny' fails check '{check}': ")
    assert fragment in message, message


def test_every_property_is_broken_by_some_case() -> None:
    assert {check for _, check, _ in BROKEN.values()} == set(CHECKS)


@pytest.mark.parametrize("name", load_backbones().names())
def test_every_registered_backbone_conforms(name: str) -> None:
    """The Keras applications with random weights (theirs need the internet); bundled weights where offline."""
    backbone = get_backbone(name)
    check_backbone(backbone, weights="default" if backbone.weights_offline("default") else "none")
