"""`BottleneckCache`: the one object the search and the CLI use to compute bottlenecks once and read them back."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from automl.cache.distributed import Executor, extract_on_cluster, use_cluster
from automl.cache.extract import DEFAULT_BATCH_SIZE, CutGroups, ExtractStats, extract, group_by_missing
from automl.cache.store import CacheKey, Part, PartStore
from automl.cache.views import ORIGINAL, check_views, entry_label
from automl.engines import EngineChoice, resolve
from automl.errors import CacheError
from automl.paths import cache_root

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from automl.backbones.base import Backbone
    from automl.data.dataset import ImageRecord

log = logging.getLogger(__name__)


class BottleneckCache:
    """Activations of a backbone's frozen part per (backbone + weights, cut, preprocessing, image SHA-1).

    `ensure` computes what is missing (and repairs damaged parts); `load` and `load_splits` read features back as
    float32.
    Several processes and nodes may share one root: writes are atomic and extraction is serialised per
    backbone + weights by a file lock, so concurrent builds neither corrupt nor duplicate anything.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.store = PartStore(root if root is not None else cache_root())

    @property
    def root(self) -> str:
        return str(self.store.root)

    @staticmethod
    def key(backbone: Backbone, weights: str, cut: str, view: str = ORIGINAL) -> CacheKey:
        return CacheKey(backbone.name, backbone.weights_id(weights), cut, backbone.preprocessing_id, view)

    def ensure(
        self,
        backbone: Backbone,
        weights: str,
        cuts: Iterable[str],
        records: Sequence[ImageRecord],
        *,
        progress: bool = True,
        executor: Executor = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        engine: EngineChoice = "auto",
        views: Iterable[str] = (ORIGINAL,),
        entries: Iterable[tuple[str, str]] = (),
        deadline: float | None = None,
        on_advance: Callable[[int], None] | None = None,
    ) -> ExtractStats:
        """Make every (cut, view, record) available, computing only what the cache lacks; `entries`: more
        (cut, view) pairs beyond `cuts` x `views` (a search's fine-tuning cut in flipped views, say).

        Each image missing some cuts or views is decoded once and goes through the frozen part once per view
        it misses, for all of that view's missing cuts (`automl.cache.views`: `hflip` flips the decoded pixels).
        `computed_by_cut` counts other views under `cut@view` (`views.entry_label`). `executor`:
        `local` extracts in this process; `ray` shards over the nodes of the connected Ray cluster (the root
        must then be a folder shared by every node); `auto` picks `ray` when Ray is initialised with more
        than one node. `engine` runs the frozen part: `auto` (OpenVINO when installed), `openvino` or
        `tensorflow`; the features, hence the cache, are the same either way (`automl.cache.engines`).
        Undecodable images are returned in `failed`, never raised. At `deadline` (wall clock, `time.time()`;
        every node's clock on a cluster) extraction stops cleanly: the finished parts are committed, so the
        next `ensure` reuses them, and the stats say `interrupted` with the images `remaining`.
        `on_advance(n)`: n more images handled (local extraction only).
        """
        start = time.perf_counter()
        keys = self._keys(backbone, weights, cuts, views, entries)
        if not keys:
            raise CacheError(f"ensure({backbone.name}): no cut points asked", hint="pass cuts such as ['all']")
        resolve(engine)  # an unknown engine is refused before any work
        stats = ExtractStats()
        with self.store.writer_lock(next(iter(keys.values()))):
            cached = {cut: self._index(key, stats.repaired).where.keys() for cut, key in keys.items()}
            groups = group_by_missing(records, lambda sha1: tuple(cut for cut in keys if sha1 not in cached[cut]))
            stats.reused = len({record.sha1 for record in records}) - sum(map(len, groups.values()))
            if groups:
                if use_cluster(executor):
                    stats.add(
                        extract_on_cluster(
                            self.store,
                            backbone,
                            weights,
                            groups,
                            batch_size=batch_size,
                            engine=engine,
                            deadline=deadline,
                        )
                    )
                    self._check_shared(keys, groups, stats)
                else:
                    stats.add(
                        extract(
                            self.store,
                            backbone,
                            weights,
                            groups,
                            batch_size=batch_size,
                            progress=progress,
                            engine=engine,
                            deadline=deadline,
                            on_advance=on_advance,
                        )
                    )
        for skipped in stats.failed:
            log.warning("bottleneck cache: skipped %s: %s", skipped.path, skipped.reason)
        stats.seconds = time.perf_counter() - start
        return stats

    def missing(
        self,
        backbone: Backbone,
        weights: str,
        cuts: Iterable[str],
        records: Sequence[ImageRecord],
        views: Iterable[str] = (ORIGINAL,),
        entries: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Images of `records` that lack some of `cuts` (in some of `views`) or of `entries`: what an `ensure`
        would compute."""
        keys = self._keys(backbone, weights, cuts, views, entries)
        cached = [self._index(key).where.keys() for key in keys.values()]
        return len({r.sha1 for r in records if any(r.sha1 not in where for where in cached)})

    def _keys(
        self,
        backbone: Backbone,
        weights: str,
        cuts: Iterable[str],
        views: Iterable[str],
        entries: Iterable[tuple[str, str]],
    ) -> dict[str, CacheKey]:
        """entry label → key of every (cut, view) of `cuts` x `views` plus `entries`, each once."""
        pairs = [(cut, view) for view in check_views(views) for cut in dict.fromkeys(cuts)] + list(entries)
        check_views(view for _, view in pairs)
        return {entry_label(cut, view): self.key(backbone, weights, cut, view) for cut, view in pairs}

    def load(
        self,
        backbone: Backbone,
        weights: str,
        cut: str,
        sha1s: Sequence[str],
        *,
        view: str = ORIGINAL,
        dtype: DTypeLike = np.float32,
    ) -> np.ndarray:
        """(N, *shape) features of `sha1s` in `dtype`, in that order; CacheError naming what is missing."""
        return self.load_splits(backbone, weights, cut, {"": sha1s}, view=view, dtype=dtype)[""]

    def load_splits(
        self,
        backbone: Backbone,
        weights: str,
        cut: str,
        splits: Mapping[str, Sequence[str]],
        *,
        view: str = ORIGINAL,
        dtype: DTypeLike = np.float32,
    ) -> dict[str, np.ndarray]:
        """float32 features of each named list of sha1s (a dataset's splits), in order, indexed and read in one
        pass: the parts are listed and checked once and each part is read once for all the lists.

        `dtype=np.float16` (the storage type of activations) halves the memory of large cuts (`half`) for a
        caller that converts each batch to float32 as it trains (`automl.train.finetune`)."""
        key = self.key(backbone, weights, cut, view)
        index = self._index(key)
        sha1s = [sha1 for wanted in splits.values() for sha1 in wanted]
        missing = [sha1 for sha1 in sha1s if sha1 not in index.where]
        if missing:
            raise CacheError(
                f"bottleneck cache {self.root}: {len(missing)} of {len(sha1s)} images have no {cut!r} features "
                f"for {backbone.name} (weights {key.weights_id}, view {view!r}), e.g. {missing[0]}",
                hint="call BottleneckCache.ensure first (the search does), or run `automl cache build RECIPE`",
            )
        if not sha1s:
            shape = backbone.cut_points()[cut].output_shape
            return {name: np.empty((0, *shape), dtype=dtype) for name in splits}
        shapes = {part.manifest.shape for part in index.parts}
        if len(shapes) > 1:
            raise CacheError(
                f"{self.root}/{key.relative_dir}: parts disagree on the shape ({sorted(shapes)})",
                hint="delete the folder and rebuild it",
            )
        out = np.empty((len(sha1s), *shapes.pop()), dtype=dtype)
        located = np.array([index.where[sha1] for sha1 in sha1s], dtype=np.int64)  # (N, 2): part number, row
        by_part = np.argsort(located[:, 0], kind="stable")
        numbers, starts = np.unique(located[by_part, 0], return_index=True)
        with ThreadPoolExecutor(max_workers=min(len(numbers), os.cpu_count() or 1)) as pool:
            reads = [
                pool.submit(self.store.read_rows, index.parts[number], located[positions, 1], out, positions)
                for number, positions in zip(numbers, np.split(by_part, starts[1:]), strict=True)
            ]
            for read in reads:
                read.result()  # parts fill disjoint rows of `out`; Arrow and NumPy release the GIL
        ends = np.cumsum([len(wanted) for wanted in splits.values()])
        return dict(zip(splits, np.split(out, ends[:-1]), strict=True))

    def _check_shared(self, keys: dict[str, CacheKey], groups: CutGroups, stats: ExtractStats) -> None:
        """After a cluster extraction, every part the nodes wrote must be visible here: else the root is not shared."""
        failed = {skipped.path for skipped in stats.failed}
        for cut, key in keys.items():
            visible = self._index(key).where
            expected = [
                r.sha1 for cuts, records in groups.items() if cut in cuts for r in records if r.path not in failed
            ]
            unseen = stats.computed_by_cut.get(cut, 0) - sum(1 for sha1 in expected if sha1 in visible)
            if unseen > 0:  # compared with what the nodes computed: an interrupted extraction leaves the rest
                raise CacheError(
                    f"{self.root}: {unseen} {cut!r} features written by other Ray nodes are not visible here",
                    hint="the cache folder must be shared by every node (NFS, a mounted bucket): set the recipe's "
                    "`cache:` or $AUTOML_CACHE to a shared path, or extract with executor='local'",
                )

    def _index(self, key: CacheKey, repaired: list[str] | None = None) -> _Index:
        """Where each sha1 of `key` is stored; the oldest part wins when concurrent writers both stored an image.

        With `repaired`, damaged parts are first deleted and reported there, so their images read as missing.
        """
        if repaired is not None:
            for bad in self.store.check_all(key, delete=True, force=False):
                log.warning("bottleneck cache: removed damaged part %s: %s", bad.path, bad.reason)
                repaired.append(f"{bad.path}: {bad.reason}")
        index = _Index(self.store.parts(key), {})
        for number, part in enumerate(index.parts):
            for row, sha1 in enumerate(self.store.sha1s(part)):
                index.where.setdefault(sha1, (number, row))
        return index


@dataclass(frozen=True)
class _Index:
    parts: list[Part]
    where: dict[str, tuple[int, int]]
    """sha1 → (position in `parts`, row in that part)."""
