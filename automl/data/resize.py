"""How a photo becomes a backbone's square input: the one description decoding, backbones and exports share.

It lives in the data layer, which applies it (`automl.data.images.decode_image`), and imports nothing
heavy, so that backbones (which import Keras), exported models and the server all import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Resample = Literal["bicubic", "bilinear"]
RESAMPLES: tuple[Resample, ...] = get_args(Resample)


@dataclass(frozen=True)
class Resize:
    """Centre-crop `crop_fraction` of the short side, then resize to `size` square with Pillow's `resample`.

    `crop_fraction` 1.0 keeps the whole short side (no crop). Raises ValueError naming the field of a
    value no photo could be resized by (a hand-edited `automl.json`, a plugin's typo).
    """

    size: int
    crop_fraction: float = 1.0
    resample: Resample = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Resize.size: {self.size!r} must be a positive integer (pixels)")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"Resize.crop_fraction: {self.crop_fraction!r} must lie in (0, 1]")
        if self.resample not in RESAMPLES:
            raise ValueError(f"Resize.resample: {self.resample!r} must be one of {', '.join(RESAMPLES)}")
