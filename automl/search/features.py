"""The features a recipe needs (`FeaturePlan`), and those every trial trains on, shared read-only.

`FeaturePlan` is the one answer to "which cached features does this job read?": for a search, every
(backbone, cut) its Tune space can propose plus cut `all` of every backbone (LR-CV and the selection), cheapest
backbone first, and, per backbone, what the fine-tuning stage reads should the selection choose it (its cut, in
the original and flipped views: `StageFeatures`), of the train and val photos only (no trial reads the test
split); for the learning curve and the benchmark, one backbone's pooled vectors (cut `all`) of the splits they
score. `automl cache build` fills all of the search's plan, so the search that follows computes nothing; the
search itself extracts the stage's entries of the chosen backbone only, when the stage starts (which backbone is
known only then, and extracting every backbone's flips up front would delay the first model).

The driver extracts backbone by backbone (`FeaturePlan.extract`: each backbone's features as soon as they
exist; at a deadline it stops with the finished parts cached), loads the train and val rows of the
backbones that finished into one `FeatureSet`, and the search puts that set into Ray's object store once
(`tune.with_parameters`). Trials on a node then map the same arrays without copying them; a trial never
decodes a photo or runs the frozen part of a backbone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
class StageFeatures:
    """What the fine-tuning stage reads of a backbone it fine-tunes: one cut's activations in `views`."""

    cut: str
    views: tuple[str, ...]

    def entries(self) -> list[tuple[str, str]]:
        """(cut, view) pairs, as `BottleneckCache.ensure(entries=...)` takes them."""
        return [(self.cut, view) for view in self.views]


@dataclass(frozen=True)
class FeaturePlan:
    """Which cached features a job reads: for each backbone its cuts (original photos), and the fine-tuning
    stage's entries (`stage`: read for the one backbone the selection chooses), of the photos of `splits`."""

    cuts: Mapping[str, tuple[str, ...]]
    splits: tuple[Split, ...]
    stage: Mapping[str, StageFeatures] = field(default_factory=dict)

    @classmethod
    def for_search(
        cls, search: SearchSection, cut_points: Mapping[str, Iterable[str]], costs: Mapping[str, float] | None = None
    ) -> FeaturePlan:
        """A search's, given each backbone's own cut point names: the cuts its Tune space offers per backbone
        plus `all` (pooled vectors: LR-CV fits each backbone's, and the baseline the first's), the fine-tuning
        stage's entries per backbone (none when `search.finetune` is off), train + val, backbones cheapest first
        by `costs` (`extraction_cost`; recipe order without, and for ties): the first features to exist are the
        cheapest backbone's, and the first model is trained on them."""
        from automl.cache.views import HFLIP, ORIGINAL
        from automl.search.space import build_space, stage_cut

        offered = build_space(search, cut_points).cuts_by_backbone
        order = sorted(offered, key=lambda name: costs[name]) if costs else list(offered)
        cuts = {name: tuple(dict.fromkeys((POOLED, *offered[name]))) for name in order}
        views = (ORIGINAL, HFLIP) if search.augment else (ORIGINAL,)
        stage_cuts = {name: stage_cut(search, cut_points[name]) for name in order}
        stage = {name: StageFeatures(cut, views) for name, cut in stage_cuts.items() if cut is not None}
        return cls(cuts=cuts, splits=TRIAL_SPLITS, stage=stage)

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
        """Compute what the cache lacks of this plan, the stage's entries included (each photo decoded once per
        backbone); what each backbone's `ensure` did."""
        records = self.records(dataset)
        return {
            name: cache.ensure(
                backbones[name],
                weights,
                list(cuts),
                records,
                entries=self.stage[name].entries() if name in self.stage else (),
                progress=progress,
                executor=executor,
                batch_size=batch_size,
                engine=engine,
            )
            for name, cuts in self.cuts.items()
        }

    def extract(
        self,
        cache: BottleneckCache,
        backbones: Mapping[str, Backbone],
        weights: str,
        dataset: Dataset,
        *,
        deadline: float | None = None,
        state: ExtractionLog | None = None,
        progress: bool = True,
        executor: Executor = "auto",
        batch_size: int = 32,
        engine: EngineChoice = "auto",
    ) -> Iterator[tuple[str, BackbonePart]]:
        """Each backbone's features as soon as they exist, in plan order (cheapest first):
        `for backbone, part in plan.extract(...)`.

        At `deadline` (wall clock) the backbone being extracted stops with its finished parts committed
        (`interrupted`; the next search reuses them). A backbone is not started (`skipped`) when the deadline
        has passed, or when the previous backbone's measured rate, scaled by `extraction_cost`, says it cannot
        finish before it. `state` follows every backbone (the run folder's `extraction.json`).
        """
        records = self.records(dataset)
        state = state or ExtractionLog(None)
        for name in self.cuts:
            state.update(name, state="pending")
        measured: tuple[float, float] | None = None  # (images/s, cost) of the last backbone that computed any
        for name, cuts in self.cuts.items():
            backbone = backbones[name]
            missing = cache.missing(backbone, weights, cuts, records)
            seconds = _estimate(missing, measured, extraction_cost(backbone))
            if missing and deadline is not None and time.time() + (seconds or 0.0) > deadline:
                state.update(name, state="skipped", images=missing, reason=_skip_reason(seconds, deadline))
                yield name, BackbonePart(name, "skipped", {}, {}, {}, None)
                continue
            state.start(name, missing, seconds)
            stats = cache.ensure(
                backbone,
                weights,
                list(cuts),
                records,
                progress=progress,
                executor=executor,
                batch_size=batch_size,
                engine=engine,
                deadline=deadline,
                on_advance=partial(state.advance, name),
            )
            rate = state.rate(name)
            if stats.computed and rate:
                measured = (rate, extraction_cost(backbone))
            if stats.interrupted:
                state.update(name, state="interrupted", remaining=stats.remaining, seconds=round(stats.seconds, 1))
                yield name, BackbonePart(name, "interrupted", {}, {}, {}, stats)
                continue
            part = self._load(cache, backbone, weights, dataset, stats)
            state.update(name, state="done", seconds=round(stats.seconds, 1))
            yield name, part

    def _load(
        self, cache: BottleneckCache, backbone: Backbone, weights: str, dataset: Dataset, stats: ExtractStats
    ) -> BackbonePart:
        """One backbone's finished features of the plan's splits, leaving out the images it could not read."""
        unreadable = {skipped.path for skipped in stats.failed}
        rows: dict[str, list[int]] = {
            split: [i for i, r in enumerate(dataset.split(split)) if r.path not in unreadable] for split in self.splits
        }
        for split in self.splits:
            if not rows[split]:
                raise AutomlError(f"{dataset.root}: no readable images in the {split} split; the search cannot run")
        kept = {split: [dataset.split(split)[i] for i in rows[split]] for split in self.splits}
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for cut in self.cuts[backbone.name]:
            features = cache.load_splits(backbone, weights, cut, {s: [r.sha1 for r in kept[s]] for s in self.splits})
            arrays[FeatureSet.key(backbone.name, cut)] = {
                **{f"x_{split}": features[split] for split in self.splits},
                **{f"y_{split}": np.array([r.label for r in kept[split]], dtype=np.int32) for split in self.splits},
            }
        sha1s: dict[str, list[str]] = {split: [r.sha1 for r in kept[split]] for split in self.splits}
        return BackbonePart(backbone.name, "done", arrays, rows, sha1s, stats)


def extraction_cost(backbone: Backbone) -> float:
    """Relative cost of extracting one image: parameters x input pixels, a proxy for a convolutional network's
    FLOPs (EfficientNet-Lite2 / Lite0: 1.8, against 1.86 measured on this machine's TensorFlow path)."""
    return float(backbone.parameter_count()) * backbone.input_size**2


def _estimate(missing: int, measured: tuple[float, float] | None, cost: float) -> float | None:
    """Seconds to extract `missing` images at the last measured rate scaled by cost; None when unknown."""
    if not missing:
        return 0.0
    if measured is None:
        return None
    rate, measured_cost = measured
    return missing / (rate * measured_cost / cost)


def _skip_reason(seconds: float | None, deadline: float) -> str:
    left = deadline - time.time()
    if seconds is None or left <= 0:
        return "the extraction deadline had passed"
    return f"estimated {seconds:.0f} s of extraction, {left:.0f} s left"


BackboneState = Literal["pending", "extracting", "done", "interrupted", "skipped"]


@dataclass
class BackbonePart:
    """One backbone's train and val features (`FeaturePlan.extract`), or why there are none."""

    backbone: str
    state: BackboneState
    """`done`, or `interrupted` (stopped at the deadline, its parts kept) or `skipped` (not started for time)."""
    arrays: dict[str, dict[str, np.ndarray]]
    """`FeatureSet.arrays` entries of this backbone's cuts; empty unless done."""
    rows: dict[str, list[int]]
    """Per split, the positions in `dataset.split(split)` of the rows (the images this backbone could read)."""
    sha1s: dict[str, list[str]]
    """Per split, those rows' photos."""
    stats: ExtractStats | None
    """What the extraction did; None when skipped."""

    @property
    def interrupted(self) -> bool:
        """The backbone has no features for this search (stopped or not started for time)."""
        return self.state != "done"


class ExtractionLog:
    """Each backbone's extraction state, images/s and ETA, written to a JSON file (the run folder's
    `extraction.json`) at most once a second, so `automl status` and the live line can show it."""

    WRITE_EVERY_S = 1.0

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.backbones: dict[str, dict[str, Any]] = {}
        self._written = 0.0

    def update(self, name: str, **fields: Any) -> None:
        self.backbones.setdefault(name, {}).update(fields)
        self._write(force=True)

    def start(self, name: str, images: int, estimate_s: float | None) -> None:
        self.update(name, state="extracting", images=images, done=0, estimate_s=estimate_s)

    def advance(self, name: str, count: int) -> None:
        """`count` more images handled; the rate counts from the first one, after the model is built or
        compiled (seconds, once per process), so it is the pipeline's steady rate."""
        entry = self.backbones[name]
        entry["done"] += count
        now = time.time()
        if "rate_since" not in entry:
            entry["rate_since"] = (now, entry["done"])
        since, done_then = entry["rate_since"]
        if now > since and entry["done"] > done_then:
            rate = (entry["done"] - done_then) / (now - since)
            entry["images_per_s"] = round(rate, 1)
            entry["eta_s"] = round((entry["images"] - entry["done"]) / rate, 1)
        self._write(force=False)

    def rate(self, name: str) -> float | None:
        """The measured images/s of `name` (None before two updates)."""
        return self.backbones.get(name, {}).get("images_per_s") or None

    def _write(self, *, force: bool) -> None:
        if self.path is None or (not force and time.time() - self._written < self.WRITE_EVERY_S):
            return
        from automl.atomic import write_atomic

        write_atomic(self.path, json.dumps({"backbones": self.backbones}, indent=1))
        self._written = time.time()


def read_extraction(path: Path) -> dict[str, dict[str, Any]]:
    """The per-backbone extraction state of a run folder; empty when none was written (or it is unreadable)."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["backbones"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def describe_extraction(backbones: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per backbone: `lite0 extracting 1200/5500 · 48.1 images/s · ETA 89 s` (status, live line)."""
    lines = []
    for name, entry in backbones.items():
        state = entry.get("state", "?")
        line = f"{name} {state}"
        if state == "extracting":
            line += f" {entry.get('done', 0)}/{entry.get('images', '?')}"
            if entry.get("images_per_s"):
                line += f" · {entry['images_per_s']:.1f} images/s"
            if entry.get("eta_s") is not None:
                line += f" · ETA {entry['eta_s']:.0f} s"
        elif state == "interrupted":
            line += f" at the deadline, {entry.get('remaining', '?')} images left (parts kept)"
        elif state == "skipped":
            line += f" for time: {entry.get('reason', '')}"
        elif state == "done" and entry.get("images_per_s"):
            line += f" ({entry['images_per_s']:.1f} images/s)"
        lines.append(line)
    return lines


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

    @classmethod
    def from_parts(cls, parts: Iterable[BackbonePart], num_classes: int) -> FeatureSet:
        """The finished backbones' features, on the rows every one of them could read (so all trials see the
        same rows whatever backbone they pick), in the parts' order (the first holds the baseline's cut)."""
        done = [part for part in parts if not part.interrupted]
        if not done:
            raise AutomlError("no backbone's features were extracted", hint="raise budget.time")
        splits = list(done[0].rows)
        common = {split: sorted(set.intersection(*(set(p.rows[split]) for p in done))) for split in splits}
        sha1_at = {split: dict(zip(done[0].rows[split], done[0].sha1s[split], strict=True)) for split in splits}
        sha1s = {split: [sha1_at[split][row] for row in common[split]] for split in splits}
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for part in done:
            take = {split: _positions(part.rows[split], common[split]) for split in splits}
            for key, values in part.arrays.items():
                arrays[key] = {
                    name: array if take[name[2:]] is None else array[take[name[2:]]] for name, array in values.items()
                }
        return cls(arrays=arrays, num_classes=num_classes, sha1s=sha1s)

    def backbones(self) -> list[str]:
        """The backbones with pooled vectors, in the plan's order (a search's: cheapest first)."""
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


def _positions(rows: list[int], wanted: list[int]) -> np.ndarray | None:
    """Where the `wanted` rows sit in `rows` (both ascending); None when they are all of them."""
    if rows == wanted:
        return None
    return np.searchsorted(np.asarray(rows), np.asarray(wanted, dtype=np.int64))


@dataclass
class FeatureReport:
    """What preparing the features cost: the search's `feature_seconds` and cache hits/misses."""

    seconds: float = 0.0
    computed: int = 0
    reused: int = 0
    failed: list[SkippedFile] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    states: dict[str, BackboneState] = field(default_factory=dict)
    """Each backbone's end state: `done`, `interrupted` (at the deadline) or `skipped` (for time)."""

    def add(self, part: BackbonePart) -> None:
        """Fold in one backbone's extraction."""
        self.states[part.backbone] = part.state
        if part.stats is not None:
            self.computed += part.stats.computed
            self.reused += part.stats.reused
            known = {skipped.path for skipped in self.failed}  # each backbone meets the same unreadable files
            self.failed.extend(skipped for skipped in part.stats.failed if skipped.path not in known)
            self.repaired.extend(part.stats.repaired)

    @property
    def finished(self) -> list[str]:
        return [name for name, state in self.states.items() if state == "done"]

    def to_record(self) -> CacheUse:
        """summary.json's `cache`."""
        from automl.runs.records import CacheUse, UnreadableFile

        return CacheUse(
            seconds=round(self.seconds, 2),
            cache_hits=self.reused,
            cache_misses=self.computed,
            failed=[UnreadableFile(file=str(f.path), reason=f.reason) for f in self.failed],
            repaired=self.repaired,
            backbones=dict(self.states),
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
    deadline: float | None = None,
    state: ExtractionLog | None = None,
    on_done: Callable[[BackbonePart], None] | None = None,
) -> tuple[FeatureSet, FeatureReport]:
    """Extract the plan backbone by backbone (`FeaturePlan.extract`) and load the finished ones.

    `on_done(part)` is called as each backbone finishes, before the next is extracted (the search exports
    its first model from the cheapest backbone's features while the others are still to come).

    The test photos are not extracted: no trial reads them, and the final evaluation runs the exported
    model on their pixels anyway (reporting any it cannot read), so extracting them would decode them and
    run the backbone on them twice. Returns the feature set of the backbones that finished before
    `deadline` and what it cost (`FeatureReport.states` says which did not); an error when none did.
    """
    from automl.cache import BottleneckCache
    from automl.monitoring.ray_metrics import record_extraction  # monitoring hook (issue 17)

    started = time.perf_counter()
    cache = BottleneckCache(cache_root)
    report = FeatureReport()
    parts = []
    extracted = plan.extract(
        cache, backbones, weights, dataset, deadline=deadline, state=state, progress=progress, engine=engine
    )
    for name, part in extracted:
        if part.stats is not None:
            record_extraction(name, part.stats.computed, part.stats.seconds)  # monitoring hook (issue 17)
        report.add(part)
        parts.append(part)
        if on_done is not None and not part.interrupted:
            on_done(part)
    report.seconds = time.perf_counter() - started
    if not report.finished:
        raise AutomlError(
            f"no backbone's features could be extracted before the deadline ({report.computed} images computed "
            f"in {report.seconds:.0f} s; {', '.join(f'{n} {s}' for n, s in report.states.items())}); the parts "
            "computed are kept in the bottleneck cache for the next search",
            hint="raise budget.time, or build the features first with `automl cache build RECIPE`",
        )
    return FeatureSet.from_parts(parts, len(dataset.classes)), report
