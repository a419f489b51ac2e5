"""The shared bottleneck cache: each image's frozen-backbone activations, computed once, stored as Parquet.

`BottleneckCache(root).ensure(backbone, weights, cuts, records)` computes what is missing (locally, or
sharded over a Ray cluster with `executor="ray"`); `.load(backbone, weights, cut, sha1s)` reads float32
features back. `store` holds the on-disk layout and its integrity rules, `extract` the decode → forward
pipeline, `distributed` the Ray sharding.

The exports load lazily, so that `automl cache ls|verify|prune` (which need only `store`) never import
Keras through the data and backbone modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl.cache.bottlenecks import BottleneckCache
    from automl.cache.extract import ExtractStats

__all__ = ["BottleneckCache", "ExtractStats"]
_HOMES = {"BottleneckCache": "automl.cache.bottlenecks", "ExtractStats": "automl.cache.extract"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'automl.cache' has no attribute {name!r}")
