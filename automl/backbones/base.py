"""The backbone contract every plugin fulfils, the core's Keras applications included.

A backbone is an ImageNet network cut in two at a named *cut point*: the frozen part (pixels to the
cut's activation, computed once per image and cached) and the trainable rest (activation to the pooled
feature vector). Cut names are shared by all backbones so that recipes can name them:

- `all`: everything frozen; the activation *is* the pooled feature vector, the rest is the identity.
- `top`: the last block (and the final 1x1 conv, where there is one) is trainable.
- `half`: roughly the second half of the network is trainable.
- `none`: nothing frozen; the "activation" is the preprocessed pixels (the cache stores decoded pixels).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import keras

CutName = Literal["all", "top", "half", "none"]
CUT_NAMES: tuple[CutName, ...] = ("all", "top", "half", "none")


@dataclass(frozen=True)
class CutPoint:
    """Where the network is cut: the layer whose output ends the frozen part (None for `all`/`none`)."""

    name: CutName
    layer: str | None
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class Resize:
    """How a photo becomes the backbone's square input, before the model's own preprocessing.

    `crop_fraction` is the share of the short side kept by the centre crop (1.0: no crop, resize the
    whole short side); `resample` is a Pillow filter name.
    """

    size: int
    crop_fraction: float = 1.0
    resample: Literal["bicubic", "bilinear"] = "bilinear"


@dataclass
class Backbone(abc.ABC):
    """One registered backbone. Subclasses set the fields and implement `_build`.

    Models built here take float32 RGB pixels in [0, 255], shape (size, size, 3), and include the
    backbone's own preprocessing as layers, so that an exported model takes raw pixels.
    """

    name: str
    resize: Resize
    feature_size: int
    preprocessing_id: str
    description: str = ""
    cut_layers: dict[str, str] = field(default_factory=dict)
    """Layer name ending the frozen part for `top` and `half` (set by each backbone)."""

    @property
    def input_size(self) -> int:
        return self.resize.size

    @abc.abstractmethod
    def _build(self, weights: str) -> keras.Model:
        """The whole network (pixels to pooled features) with the given weights loaded."""

    @abc.abstractmethod
    def weights_id(self, weights: str) -> str:
        """Identifies the weights' content: it changes whenever the weights change (cache keys use it).

        `weights` is `default`, `imagenet`, `none` or a path to a weights file.
        """

    @abc.abstractmethod
    def weights_offline(self, weights: str = "default") -> bool:
        """Whether these weights can be had right now without the internet."""
