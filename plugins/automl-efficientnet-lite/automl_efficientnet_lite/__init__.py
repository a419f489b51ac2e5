"""EfficientNet-Lite backbones for automl (work in progress)."""
