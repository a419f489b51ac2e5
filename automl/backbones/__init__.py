"""Backbones: the plugin registry, the backbone contract, and the preprocessing layer exported models use.

Names are imported lazily so that light modules (the CLI's `--help`) can use the contract without paying
for Keras; `Resize` lives in `automl.data.resize` (the data layer applies it) and is re-exported here.
Loading an exported model needs `automl.backbones.layers` imported first (it registers the
`automl>Preprocess` layer for Keras safe mode); `automl.exported` does that.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CUT_NAMES": "automl.backbones.base",
    "Backbone": "automl.backbones.base",
    "CutAt": "automl.backbones.base",
    "CutPoint": "automl.backbones.base",
    "Resize": "automl.data.resize",
    "get_backbone": "automl.backbones.registry",
    "load_backbones": "automl.backbones.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'automl.backbones' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
