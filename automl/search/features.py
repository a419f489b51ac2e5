"""The features a recipe needs (`FeaturePlan`), and those every trial trains on, shared read-only.

`FeaturePlan` is the one answer to "which cached features does this job read?": for a search, every
(backbone, cut) its space can propose plus cut `all` of the first backbone (the baseline), of the train
and val photos only (no trial reads the test split); for the learning curve and the benchmark, one
backbone's pooled vectors (cut `all`) of the splits they score. `automl cache build` fills exactly the
search's plan, so the search that follows computes nothing.

The driver ensures the bottleneck cache for every (backbone, cut) the space can propose, loads the train
and val rows into one `FeatureSet`, and the search puts that set into Ray's object store once
(`tune.with_parameters`). Trials on a node then map the same arrays without copying them; a trial never
decodes a photo or runs the frozen part of a backbone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.errors import AutomlError

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.cache import BottleneckCache, ExtractStats
    from automl.cache.distributed import Executor
    from automl.data.dataset import Dataset, ImageRecord, SkippedFile, Split
    from automl.engines import EngineChoice
    from automl.recipe import SearchSection
    from automl.runs.records import CacheUse
    from automl.train import TrialData

TRIAL_SPLITS: tuple[Split, ...] = ("train", "val")
POOLED = "all"
"""The cut of pooled vectors: the baseline's, the learning curve's and the benchmark's."""


@dataclass(frozen=True)
class FeaturePlan:
    """Which cached features a job reads: for each backbone its cuts, of the photos of `splits`."""

    cuts: Mapping[str, tuple[str, ...]]
    splits: tuple[Split, ...]

    @classmethod
    def for_search(cls, search: SearchSection, cut_points: Mapping[str, Iterable[str]]) -> FeaturePlan:
        """A search's: the cuts its space offers per backbone plus `all` (LR-CV, the baseline), train + val."""
        from automl.search.space import offered_cuts

        # pooled vectors of every backbone: the cross-validated selection fits LR-CV on each (automl.search.selection)
        offered = offered_cuts(search, cut_points)
        cuts = {name: tuple(dict.fromkeys((POOLED, *cuts))) for name, cuts in offered.items()}
        return cls(cuts=cuts, splits=TRIAL_SPLITS)

    @classmethod
    def pooled(cls, backbone: str, splits: Sequence[Split]) -> FeaturePlan:
        """One backbone's pooled vectors of `splits` (the learning curve, the benchmark's training)."""
        return cls(cuts={backbone: (POOLED,)}, splits=tuple(splits))

    def records(self, dataset: Dataset) -> list[ImageRecord]:
        return [record for split in self.splits for record in dataset.split(split)]

    def ensure(
        self,
        cache: BottleneckCache,
        backbones: Mapping[str, Backbone],
        weights: str,
        dataset: Dataset,
        *,
        progress: bool = True,
        executor: Executor = "auto",
        batch_size: int = 32,
        engine: EngineChoice = "auto",
    ) -> dict[str, ExtractStats]:
        """Compute what the cache lacks of this plan; what each backbone's `ensure` did."""
        records = self.records(dataset)
        return {
            name: cache.ensure(
                backbones[name],
                weights,
                list(cuts),
                records,
                progress=progress,
                executor=executor,
                batch_size=batch_size,
                engine=engine,
            )
            for name, cuts in self.cuts.items()
        }


@dataclass
class FeatureSet:
    """Train and val activations for each (backbone, cut), with labels; picklable without copies.

    `arrays[f"{backbone}/{cut}"]` holds `x_train`, `y_train`, `x_val`, `y_val`. Arrays fetched from
    Ray's object store are read-only views of shared memory: nothing here may write to them.
    """

    arrays: dict[str, dict[str, np.ndarray]]
    num_classes: int
    sha1s: dict[str, list[str]] = field(default_factory=dict)
    """Each split's photos, in the rows' order (what cross-validation folds are a function of)."""

    @staticmethod
    def key(backbone: str, cut: str) -> str:
        return f"{backbone}/{cut}"

    def backbones(self) -> list[str]:
        """The backbones with pooled vectors, in the plan's order."""
        return [key.split("/")[0] for key in self.arrays if key.endswith(f"/{POOLED}")]

    def pool(self, backbone: str, cut: str = POOLED) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The development pool (train then val rows): activations, labels and the photos' SHA-1."""
        arrays = self.arrays[self.key(backbone, cut)]
        x = np.concatenate([arrays["x_train"], arrays["x_val"]])
        y = np.concatenate([arrays["y_train"], arrays["y_val"]])
        return x, y, [*self.sha1s.get("train", []), *self.sha1s.get("val", [])]

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

    def to_record(self) -> CacheUse:
        """summary.json's `cache`."""
        from automl.runs.records import CacheUse, UnreadableFile

        return CacheUse(
            seconds=round(self.seconds, 2),
            cache_hits=self.reused,
            cache_misses=self.computed,
            failed=[UnreadableFile(file=str(f.path), reason=f.reason) for f in self.failed],
            repaired=self.repaired,
        )


def prepare_features(
    dataset: Dataset,
    backbones: Mapping[str, Backbone],
    plan: FeaturePlan,
    weights: str,
    cache_root: str,
    *,
    progress: bool = True,
    engine: EngineChoice = "auto",
) -> tuple[FeatureSet, FeatureReport]:
    """Ensure the cache for the plan (every (backbone, cut) of the train and val photos) once and load it.

    The test photos are not extracted: no trial reads them, and the final evaluation runs the exported
    model on their pixels anyway (reporting any it cannot read), so extracting them would decode them and
    run the backbone on them twice. Returns the feature set and what it cost. Train or val images any
    backbone failed to read are dropped from both splits, so all trials see the same rows whatever
    backbone they pick.
    """
    from automl.cache import BottleneckCache
    from automl.monitoring.ray_metrics import record_extraction  # monitoring hook (issue 17)

    started = time.perf_counter()
    cache = BottleneckCache(cache_root)
    report = FeatureReport()
    ensured = plan.ensure(cache, backbones, weights, dataset, progress=progress, engine=engine)
    for name, stats in ensured.items():
        record_extraction(name, stats.computed, stats.seconds)  # monitoring hook (issue 17)
        report.computed += stats.computed
        report.reused += stats.reused
        report.failed.extend(stats.failed)
        report.repaired.extend(stats.repaired)
    unreadable = {skipped.path for skipped in report.failed}
    records = {split: [r for r in dataset.split(split) if r.path not in unreadable] for split in plan.splits}
    for split in plan.splits:
        if not records[split]:
            raise AutomlError(f"{dataset.root}: no readable images in the {split} split; the search cannot run")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, cuts in plan.cuts.items():
        for cut in cuts:
            features = cache.load_splits(
                backbones[name], weights, cut, {split: [r.sha1 for r in records[split]] for split in plan.splits}
            )
            arrays[FeatureSet.key(name, cut)] = {
                **{f"x_{split}": features[split] for split in plan.splits},
                **{f"y_{split}": np.array([r.label for r in records[split]], dtype=np.int32) for split in plan.splits},
            }
    report.seconds = time.perf_counter() - started
    sha1s: dict[str, list[str]] = {split: [r.sha1 for r in records[split]] for split in plan.splits}
    return FeatureSet(arrays=arrays, num_classes=len(dataset.classes), sha1s=sha1s), report
