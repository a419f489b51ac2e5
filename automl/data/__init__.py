"""Photos in, labelled records out: decoding any real-world image file, and scanning/splitting a dataset folder."""

from automl.data.dataset import (
    SPLITS,
    Dataset,
    DuplicateGroup,
    ImageRecord,
    ScannedFile,
    SkippedFile,
    Split,
    scan_dataset,
)
from automl.data.images import MAX_PIXELS, ImageError, ImageInfo, decode_image, probe_image, verify_image

__all__ = [
    "MAX_PIXELS",
    "SPLITS",
    "Dataset",
    "DuplicateGroup",
    "ImageError",
    "ImageInfo",
    "ImageRecord",
    "ScannedFile",
    "SkippedFile",
    "Split",
    "decode_image",
    "probe_image",
    "scan_dataset",
    "verify_image",
]
