"""EfficientNet-Lite0/1/2 backbones for automl, with ImageNet weights that work offline (no torch needed).

Registered through the entry-point group `automl.backbones` (see this package's pyproject.toml); each
entry point is a zero-argument factory returning the backbone.
"""

from automl_efficientnet_lite.backbone import EfficientNetLite, lite_backbone


def lite0() -> EfficientNetLite:
    return lite_backbone("efficientnet_lite0")


def lite1() -> EfficientNetLite:
    return lite_backbone("efficientnet_lite1")


def lite2() -> EfficientNetLite:
    return lite_backbone("efficientnet_lite2")


__all__ = ["EfficientNetLite", "lite0", "lite1", "lite2", "lite_backbone"]
