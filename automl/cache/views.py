"""Views of a photo that the bottleneck cache can hold: the original and deterministic augmentations of it.

A view is a function of the decoded input pixels only (after the backbone's crop and resize), so it costs no
second decode: the extractor decodes a photo once and runs the frozen part on each view it misses. A view is
part of the cache key, so a later search over the same photos reads flipped activations back instead of
computing them again. `hflip` is the one label-preserving augmentation that holds for every photo set the
project targets (objects, animals, scenes); vertical flips and rotations are not (a cow upside down).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from automl.errors import InputError

ORIGINAL = "orig"
HFLIP = "hflip"
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    ORIGINAL: lambda pixels: pixels,
    HFLIP: lambda pixels: np.ascontiguousarray(pixels[:, :, ::-1]),
}
"""view name → pixels (B, H, W, C) → the view's pixels (same shape and dtype)."""
LABEL_SEPARATOR = "@"


def check_views(views: Iterable[str]) -> tuple[str, ...]:
    """The views asked, deduplicated in order; InputError naming an unknown one."""
    chosen = tuple(dict.fromkeys(views))
    for view in chosen:
        if view not in VIEWS:
            raise InputError(f"unknown cache view {view!r}", hint=f"choose among {', '.join(VIEWS)}")
    if not chosen:
        raise InputError("no cache views asked", hint=f"pass views such as [{ORIGINAL!r}]")
    return chosen


def apply_view(view: str, pixels: np.ndarray) -> np.ndarray:
    """`pixels` (B, H, W, C) as seen through `view`."""
    return VIEWS[view](pixels)


def entry_label(cut: str, view: str) -> str:
    """One cached entry kind as a string: the cut alone for the original (as before views existed), else
    `cut@view`; extraction groups and `ExtractStats.computed_by_cut` use these labels."""
    return cut if view == ORIGINAL else f"{cut}{LABEL_SEPARATOR}{view}"


def parse_label(label: str) -> tuple[str, str]:
    """(cut, view) of an `entry_label`."""
    cut, _, view = label.partition(LABEL_SEPARATOR)
    return cut, view or ORIGINAL
