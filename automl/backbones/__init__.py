"""Backbones: the plugin registry, the backbone contract, and the preprocessing layer exported models use.

Importing this package registers the `automl>Preprocess` layer with Keras, so that exported models load
in safe mode (`keras.saving.load_model(path)`) once `import automl.backbones` has run.
"""

from automl.backbones import layers as layers  # registers the serializable preprocessing layer
from automl.backbones.base import CUT_NAMES, Backbone, CutAt, CutPoint, Resize
from automl.backbones.registry import get_backbone, load_backbones

__all__ = ["CUT_NAMES", "Backbone", "CutAt", "CutPoint", "Resize", "get_backbone", "layers", "load_backbones"]
