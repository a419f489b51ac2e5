"""The features every trial trains on: cached activations, computed once in the driver, shared read-only.

The driver ensures the bottleneck cache for every (backbone, cut) the space can propose, loads the train
and val rows into one `FeatureSet`, and the search puts that set into Ray's object store once
(`tune.with_parameters`). Trials on a node then map the same arrays without copying them; a trial never
decodes a photo or runs the frozen part of a backbone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.errors import AutomlError

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset, ImageRecord, SkippedFile
    from automl.train import TrialData

TRIAL_SPLITS = ("train", "val")


@dataclass
class FeatureSet:
    """Train and val activations for each (backbone, cut), with labels; picklable without copies.

    `arrays[f"{backbone}/{cut}"]` holds `x_train`, `y_train`, `x_val`, `y_val`. Arrays fetched from
    Ray's object store are read-only views of shared memory: nothing here may write to them.
    """

    arrays: dict[str, dict[str, np.ndarray]]
    num_classes: int

    @staticmethod
    def key(backbone: str, cut: str) -> str:
        return f"{backbone}/{cut}"

    def trial_data(self, backbone: str, cut: str, rest: Any = None) -> TrialData:
        from automl.train import TrialData

        arrays = self.arrays[self.key(backbone, cut)]
        return TrialData(
            x_train=arrays["x_train"],
            y_train=arrays["y_train"],
            x_val=arrays["x_val"],
            y_val=arrays["y_val"],
            num_classes=self.num_classes,
            rest=rest,
        )

    @property
    def rows(self) -> int:
        """Cached rows a trial reads (train + val): its cache hits."""
        first = next(iter(self.arrays.values()))
        return len(first["y_train"]) + len(first["y_val"])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for arrays in self.arrays.values() for a in arrays.values())


@dataclass
class FeatureReport:
    """What preparing the features cost: the search's `feature_seconds` and cache hits/misses."""

    seconds: float = 0.0
    computed: int = 0
    reused: int = 0
    failed: list[SkippedFile] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "cache_hits": self.reused,
            "cache_misses": self.computed,
            "failed": [{"file": str(f.path), "reason": f.reason} for f in self.failed],
            "repaired": self.repaired,
        }


def prepare_features(
    dataset: Dataset,
    backbones: Mapping[str, Backbone],
    cuts_by_backbone: Mapping[str, Sequence[str]],
    weights: str,
    cache_root: str,
    *,
    progress: bool = True,
) -> tuple[FeatureSet, FeatureReport, list[ImageRecord]]:
    """Ensure the cache for every (backbone, cut) of the train and val photos once and load them.

    The test photos are not extracted: no trial reads them, and the final evaluation runs the exported
    model on their pixels anyway (reporting any it cannot read), so extracting them would decode them and
    run the backbone on them twice. Returns the feature set, what it cost, and the test records. Train or
    val images any backbone failed to read are dropped from both splits, so all trials see the same rows
    whatever backbone they pick.
    """
    from automl.cache import BottleneckCache
    from automl.monitoring.ray_metrics import record_extraction  # monitoring hook (issue 17)

    started = time.perf_counter()
    cache = BottleneckCache(cache_root)
    report = FeatureReport()
    trial_records = [record for split in TRIAL_SPLITS for record in dataset.split(split)]
    for name, cuts in cuts_by_backbone.items():
        stats = cache.ensure(backbones[name], weights, list(cuts), trial_records, progress=progress)
        record_extraction(name, stats.computed, stats.seconds)  # monitoring hook (issue 17)
        report.computed += stats.computed
        report.reused += stats.reused
        report.failed.extend(stats.failed)
        report.repaired.extend(stats.repaired)
    unreadable = {skipped.path for skipped in report.failed}
    records = {split: [r for r in dataset.split(split) if r.path not in unreadable] for split in TRIAL_SPLITS}
    for split in TRIAL_SPLITS:
        if not records[split]:
            raise AutomlError(f"{dataset.root}: no readable images in the {split} split; the search cannot run")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, cuts in cuts_by_backbone.items():
        for cut in cuts:
            features = cache.load_splits(
                backbones[name], weights, cut, {split: [r.sha1 for r in records[split]] for split in TRIAL_SPLITS}
            )
            arrays[FeatureSet.key(name, cut)] = {
                **{f"x_{split}": features[split] for split in TRIAL_SPLITS},
                **{f"y_{split}": np.array([r.label for r in records[split]], dtype=np.int32) for split in TRIAL_SPLITS},
            }
    report.seconds = time.perf_counter() - started
    return FeatureSet(arrays=arrays, num_classes=len(dataset.classes)), report, dataset.split("test")
