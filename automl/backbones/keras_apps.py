"""The Keras applications the reference studies used, registered through the same entry points as plugins.

Each keeps Keras' documented preprocessing for its ImageNet weights (as a `Preprocess` layer inside the
model, except EfficientNetB0, whose Keras model rescales and normalises by itself) and the usual
ImageNet evaluation resize: centre crop of 87.5 % of the short side, bilinear.

Weights: `default` and `imagenet` are Keras' ImageNet weights (downloaded once into `$KERAS_HOME/models`;
this fails without the internet, with a hint to use a local file or the EfficientNet-Lite backbones); a
path is a Keras weights file for the same network without its top (e.g. the `*_notop.h5` Keras
publishes, or a `.weights.h5` saved from a model built here). Known upstream quirk: Keras adds
EfficientNetB0's ImageNet standard-deviation rescaling only for `weights="imagenet"`, so a local
`efficientnetb0_notop.h5` gives slightly different features than the downloaded weights.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from automl.backbones.base import Backbone, CutAt, PreprocessingMode
from automl.data.resize import Resize
from automl.errors import InputError

if TYPE_CHECKING:
    import keras

IMAGENET_CROP = 0.875


@dataclass
class KerasApplication(Backbone):
    """A `keras.applications` network without its top, average-pooled, preprocessing inside."""

    constructor: str = ""
    """Name of the `keras.applications` function, e.g. `ResNet50`."""
    weights_file: str = ""
    """File name of Keras' ImageNet no-top weights in its cache folder (to tell whether they are offline)."""

    def _build(self, weights: str) -> keras.Model:
        import keras

        _, x = self.preprocessed_input()
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


@dataclass(frozen=True)
class _Spec:
    constructor: str
    size: int
    features: int
    mode: PreprocessingMode
    weights_file: str
    top: CutAt
    half: CutAt
    description: str


# Cuts: `top` leaves the last block (and the final 1x1 conv) trainable, `half` about the second half;
# both at single-tensor block boundaries (`side="input"` where the boundary tensor's layer is unnamed).
_SPECS = {
    "resnet50": _Spec(
        "ResNet50", 224, 2048, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        CutAt("conv5_block2_out"), CutAt("conv4_block3_out"),
        "ResNet50 (He et al. 2015); caffe preprocessing (BGR minus ImageNet mean)",
    ),
    "vgg16": _Spec(
        "VGG16", 224, 512, "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        CutAt("block4_pool"), CutAt("block3_pool"),
        "VGG16 (Simonyan & Zisserman 2014); caffe preprocessing (BGR minus ImageNet mean)",
    ),
    "inception_v3": _Spec(
        "InceptionV3", 299, 2048, "tf", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        CutAt("mixed9"), CutAt("mixed5"),
        "InceptionV3 (Szegedy et al. 2015); tf preprocessing (x / 127.5 - 1)",
    ),
    "xception": _Spec(
        "Xception", 299, 2048, "tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        CutAt("block14_sepconv1", side="input"), CutAt("block8_sepconv1_act", side="input"),
        "Xception (Chollet 2016); tf preprocessing (x / 127.5 - 1)",
    ),
    "mobilenet_v2": _Spec(
        "MobileNetV2", 224, 1280, "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        CutAt("block_16_expand", side="input"), CutAt("block_8_expand", side="input"),
        "MobileNetV2 (Sandler et al. 2018), alpha 1.0; tf preprocessing (x / 127.5 - 1)",
    ),
    "efficientnet_b0": _Spec(
        "EfficientNetB0", 224, 1280, "raw", "efficientnetb0_notop.h5",
        CutAt("block7a_expand_conv", side="input"), CutAt("block5a_expand_conv", side="input"),
        "EfficientNetB0 (Tan & Le 2019); the Keras model rescales and normalises raw pixels itself",
    ),
}  # fmt: skip


def keras_application(name: str) -> KerasApplication:
    """The core backbone `name` (a key of `_SPECS`); the entry points below are its partials."""
    spec = _SPECS[name]
    return KerasApplication(
        name=name,
        resize=Resize(spec.size, IMAGENET_CROP, "bilinear"),
        feature_size=spec.features,
        preprocessing_mode=spec.mode,
        description=spec.description,
        cut_at={"top": spec.top, "half": spec.half},
        constructor=spec.constructor,
        weights_file=spec.weights_file,
    )


resnet50 = functools.partial(keras_application, "resnet50")
vgg16 = functools.partial(keras_application, "vgg16")
inception_v3 = functools.partial(keras_application, "inception_v3")
xception = functools.partial(keras_application, "xception")
mobilenet_v2 = functools.partial(keras_application, "mobilenet_v2")
efficientnet_b0 = functools.partial(keras_application, "efficientnet_b0")
