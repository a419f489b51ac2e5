"""The Keras applications the reference studies used, registered through the same entry points as plugins.

Each keeps Keras' documented preprocessing for its ImageNet weights (as a `Preprocess` layer inside the
model, except EfficientNetB0, whose Keras model rescales and normalises by itself) and the usual
ImageNet evaluation resize: centre crop of 87.5 % of the short side, bilinear.

Weights: `default` and `imagenet` are Keras' ImageNet weights (downloaded once into `$KERAS_HOME/models`;
this fails without the internet, with a hint to use a local file or the EfficientNet-Lite backbones); a
path is a Keras weights file for the same network without its top (e.g. the `*_notop.h5` Keras
publishes, or a `.weights.h5` saved from a model built here).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from automl.backbones.base import Backbone, CutAt, Resize
from automl.errors import InputError

if TYPE_CHECKING:
    import keras

IMAGENET_CROP = 0.875


@dataclass
class KerasApplication(Backbone):
    """A `keras.applications` network without its top, average-pooled, preprocessing inside."""

    constructor: str = ""
    """Name of the `keras.applications` function, e.g. `ResNet50`."""
    preprocessing_mode: str = "raw"
    """A `Preprocess` mode (see `automl.backbones.layers`); `raw` adds no layer."""
    weights_file: str = ""
    """File name of Keras' ImageNet no-top weights in its cache folder (to tell whether they are offline)."""

    def _build(self, weights: str) -> keras.Model:
        import keras

        from automl.backbones.layers import Preprocess

        pixels = keras.Input(shape=(self.input_size, self.input_size, 3), name="pixels")
        x = pixels
        if self.preprocessing_mode != "raw":
            x = Preprocess(self.preprocessing_mode, name="preprocess")(pixels)
        keras_weights = {"none": None, "default": "imagenet"}.get(weights, weights)
        application: Callable[..., keras.Model] = getattr(keras.applications, self.constructor)
        try:
            return application(include_top=False, weights=keras_weights, input_tensor=x, pooling="avg")
        except Exception as exc:
            if keras_weights == "imagenet" and not self._pretrained_offline(weights):
                raise InputError(
                    f"backbone {self.name}: Keras could not download its ImageNet weights ({exc})",
                    hint=f"without the internet, give a local weights file (Keras' {self.weights_file}) "
                    "or use an EfficientNet-Lite backbone, whose weights are bundled",
                ) from exc
            raise InputError(f"backbone {self.name}: cannot load weights {weights!r}: {exc}") from exc

    def _pretrained_id(self, weights: str) -> str:
        return f"keras-imagenet-{self.weights_file}"

    def _pretrained_offline(self, weights: str) -> bool:
        keras_home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
        return (keras_home / "models" / self.weights_file).is_file()


def _application(
    name: str,
    constructor: str,
    *,
    size: int,
    features: int,
    mode: str,
    weights_file: str,
    top: CutAt,
    half: CutAt,
    description: str,
) -> KerasApplication:
    return KerasApplication(
        name=name,
        resize=Resize(size, IMAGENET_CROP, "bilinear"),
        feature_size=features,
        preprocessing_id=f"{mode}-crop{IMAGENET_CROP}-bilinear-{size}",
        description=description,
        cut_at={"top": top, "half": half},
        constructor=constructor,
        preprocessing_mode=mode,
        weights_file=weights_file,
    )


def resnet50() -> KerasApplication:
    return _application(
        "resnet50",
        "ResNet50",
        size=224,
        features=2048,
        mode="caffe",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        top=CutAt("conv5_block2_out"),
        half=CutAt("conv4_block3_out"),
        description="ResNet50 (He et al. 2015); caffe preprocessing (BGR minus ImageNet mean)",
    )


def vgg16() -> KerasApplication:
    return _application(
        "vgg16",
        "VGG16",
        size=224,
        features=512,
        mode="caffe",
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        top=CutAt("block4_pool"),
        half=CutAt("block3_pool"),
        description="VGG16 (Simonyan & Zisserman 2014); caffe preprocessing (BGR minus ImageNet mean)",
    )


def inception_v3() -> KerasApplication:
    return _application(
        "inception_v3",
        "InceptionV3",
        size=299,
        features=2048,
        mode="tf",
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        top=CutAt("mixed9"),
        half=CutAt("mixed5"),
        description="InceptionV3 (Szegedy et al. 2015); tf preprocessing (x / 127.5 - 1)",
    )


def xception() -> KerasApplication:
    return _application(
        "xception",
        "Xception",
        size=299,
        features=2048,
        mode="tf",
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        top=CutAt("block14_sepconv1", side="input"),
        half=CutAt("block8_sepconv1_act", side="input"),
        description="Xception (Chollet 2016); tf preprocessing (x / 127.5 - 1)",
    )


def mobilenet_v2() -> KerasApplication:
    return _application(
        "mobilenet_v2",
        "MobileNetV2",
        size=224,
        features=1280,
        mode="tf",
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        top=CutAt("block_16_expand", side="input"),
        half=CutAt("block_8_expand", side="input"),
        description="MobileNetV2 (Sandler et al. 2018), alpha 1.0; tf preprocessing (x / 127.5 - 1)",
    )


def efficientnet_b0() -> KerasApplication:
    return _application(
        "efficientnet_b0",
        "EfficientNetB0",
        size=224,
        features=1280,
        mode="raw",
        weights_file="efficientnetb0_notop.h5",
        top=CutAt("block7a_expand_conv", side="input"),
        half=CutAt("block5a_expand_conv", side="input"),
        description="EfficientNetB0 (Tan & Le 2019); the Keras model rescales and normalises raw pixels itself",
    )
