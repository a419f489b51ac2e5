"""A recipe's dataset with near-duplicate groups kept in one split (`data.group_near_duplicates: true`).

The groups come from pooled vectors, which exist only once the photos are in the bottleneck cache, and the split
comes from the scan: so the folder is scanned, the first backbone's `all` vectors of EVERY photo (test included:
a test photo's near-copy in train is the leak) are ensured, the groups found, and the folder split again with
them (a rescan of an unchanged folder is stat-only). Without the option this is `Dataset.from_recipe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from automl.audit.neighbours import NEAR_DUPLICATE_COSINE, centred_unit_rows, group_labels, pairs_above
from automl.data.dataset import Dataset, ImageRecord

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.cache import BottleneckCache
    from automl.recipe import Recipe

CUT = "all"


def pooled_vectors(
    cache: BottleneckCache,
    backbone: Backbone,
    weights: str,
    records: Sequence[ImageRecord],
    *,
    progress: bool = False,
    deadline: float | None = None,
) -> tuple[np.ndarray, list[ImageRecord]]:
    """(N, features) pooled vectors of the readable `records` (computing only what the cache lacks), and those
    records in the same order: photos the extractor could not decode are left out, as the search leaves them.

    A warm cache is read without `ensure`: `ensure` takes the backbone's writer lock first, and another process
    extracting any cut of the same backbone holds it for minutes (seen on the shared machine). At `deadline` (wall
    clock) the extraction stops with its parts kept and an `AutomlError` says so (the end of a search's budget).
    """
    from automl.errors import AutomlError, CacheError

    try:
        x = cache.load(backbone, weights, CUT, [record.sha1 for record in records])
        return x.reshape(len(records), -1), list(records)
    except CacheError:
        pass  # something is missing (or undecodable): compute it, and learn which photos failed
    stats = cache.ensure(backbone, weights, [CUT], records, progress=progress, deadline=deadline)
    if stats.interrupted:
        raise AutomlError(
            f"the time budget ended while extracting {backbone.name}'s features of {stats.remaining} more photos "
            "(the test split's: the search reads train and val only)",
            hint="`automl data audit RECIPE` audits the data without a deadline (the parts computed are kept)",
        )
    failed = {item.path for item in stats.failed}
    kept = [record for record in records if record.path not in failed]
    x = cache.load(backbone, weights, CUT, [record.sha1 for record in kept])
    return x.reshape(len(kept), -1), kept


def near_duplicate_groups(sha1s: Sequence[str], features: np.ndarray, threshold: float) -> dict[str, str]:
    """{sha1: representative sha1} for every photo in a near-duplicate group of two or more (the smallest SHA-1
    of the group represents it: `scan_dataset(groups=...)` then puts the whole group in that photo's split)."""
    unit = centred_unit_rows(features)
    labels = group_labels(len(sha1s), pairs_above(unit, threshold))
    members: dict[int, list[str]] = {}
    for sha1, label in zip(sha1s, labels.tolist(), strict=True):
        members.setdefault(label, []).append(sha1)
    return {sha1: min(group) for group in members.values() if len(group) > 1 for sha1 in group}


def dataset_for_recipe(recipe: Recipe, *, cache: BottleneckCache | None = None, progress: bool = False) -> Dataset:
    """The recipe's dataset, split with its near-duplicate groups kept together when the recipe asks for it."""
    dataset = Dataset.from_recipe(recipe.data, progress=progress)
    if not recipe.data.group_near_duplicates:
        return dataset
    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.paths import cache_root

    cache = cache or BottleneckCache(cache_root(recipe.cache))
    x, kept = pooled_vectors(cache, get_backbone(recipe.search.backbones[0]), recipe.search.weights, dataset.records)
    groups = near_duplicate_groups([record.sha1 for record in kept], x, NEAR_DUPLICATE_COSINE)
    return Dataset.from_recipe(recipe.data, groups=groups)
