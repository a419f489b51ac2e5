"""The extraction pipeline: image files → decoded batches → one forward pass per batch → cache parts.

Decoding runs in a small thread pool (Pillow releases the GIL while it decodes and resizes, and JPEGs are
decoded at reduced DCT scale by `decode_image`), a bounded window ahead of the forward pass. The forward pass
runs on OpenVINO when it can (`automl.cache.engines`: an async queue keeps a batch in flight while this thread
fetches the next; OpenVINO's threads release the GIL), else as one traced TensorFlow function in the calling
thread; either spreads over every core. Parts are written by a background thread. So the cores decode the next
batch and write the last one while the frozen part computes this one, and memory stays flat however many
images there are."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automl.cache.engines import openvino_frozen
from automl.cache.store import CacheKey, PartStore, PartWriter
from automl.cache.views import apply_view, entry_label, parse_label
from automl.data.dataset import ImageRecord, SkippedFile
from automl.data.images import ImageError, decode_image
from automl.engines import EngineChoice
from automl.engines import resolve as resolve_engine

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.resize import Resize

DEFAULT_BATCH_SIZE = 32
CutGroups = dict[tuple[str, ...], list[ImageRecord]]
"""Images grouped by the entries they miss (`views.entry_label`: a cut, or `cut@view`): each group needs one
decode and one forward pass per view giving exactly that view's missing cuts."""


@dataclass
class ExtractStats:
    """What an `ensure` did; the search reports cache hits (`reused`) and misses (`computed`) from it."""

    computed: int = 0
    """Images run through the frozen part."""
    reused: int = 0
    """Images whose every requested cut was already cached."""
    failed: list[SkippedFile] = field(default_factory=list)
    """Images that could not be read or decoded: reported, skipped, not cached."""
    seconds: float = 0.0
    bytes: int = 0
    """Bytes of Parquet written."""
    computed_by_cut: dict[str, int] = field(default_factory=dict)
    """Activations computed per cut (an image missing two cuts counts under both)."""
    repaired: list[str] = field(default_factory=list)
    """Damaged parts found, deleted and recomputed: 'path: reason'."""
    interrupted: bool = False
    """The deadline passed first: what was computed is committed (the next `ensure` reuses it)."""
    remaining: int = 0
    """Images left to compute when interrupted."""

    def add(self, other: ExtractStats) -> None:
        """Fold in the stats of another extraction (a Ray shard, another cut group)."""
        self.computed += other.computed
        self.reused += other.reused
        self.failed.extend(other.failed)
        self.bytes += other.bytes
        for cut, count in other.computed_by_cut.items():
            self.computed_by_cut[cut] = self.computed_by_cut.get(cut, 0) + count
        self.repaired.extend(other.repaired)
        self.interrupted = self.interrupted or other.interrupted
        self.remaining += other.remaining


@dataclass(frozen=True)
class Batch:
    sha1s: list[str]
    pixels: np.ndarray
    """uint8 (B, size, size, 3)."""


def decode_file(path: Path, resize: Resize) -> np.ndarray:
    """The photo at `path` as the backbone's input pixels; ImageError (with the reason) if it cannot be."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read the file ({exc.strerror or exc})") from exc
    return decode_image(data, resize)


def decoded_batches(
    records: Sequence[ImageRecord],
    resize: Resize,
    batch_size: int,
    failed: list[SkippedFile],
    *,
    done: Callable[[int], None] = lambda _count: None,
    workers: int | None = None,
) -> Generator[Batch, None, None]:
    """Batches of decoded images in record order; undecodable files go to `failed` and are left out.

    At most four batches are in flight, so a slow forward pass never lets decoded images pile up.
    `done(1)` is called for every record handled, decoded or not (the progress bar). Closing the generator
    early (a deadline) cancels the decodes not started yet.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    window = 4 * batch_size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="automl-decode") as pool:
        pending: deque[tuple[ImageRecord, Future[np.ndarray]]] = deque()
        upcoming = iter(records)
        sha1s: list[str] = []
        images: list[np.ndarray] = []
        try:
            while True:
                while len(pending) < window and (record := next(upcoming, None)) is not None:
                    pending.append((record, pool.submit(decode_file, record.path, resize)))
                if not pending:
                    break
                record, future = pending.popleft()
                try:
                    images.append(future.result())
                    sha1s.append(record.sha1)
                except ImageError as exc:
                    failed.append(SkippedFile(record.path, exc.reason))
                done(1)
                if len(images) == batch_size:
                    yield Batch(sha1s, np.stack(images))
                    sha1s, images = [], []
            if images:
                yield Batch(sha1s, np.stack(images))
        finally:  # closed early (a deadline): drop the decodes not started, so the pool shuts down at once
            for _record, future in pending:
                future.cancel()


def until(batches: Iterator[Batch], deadline: float | None, stopped: list[bool]) -> Iterator[Batch]:
    """`batches` while the wall clock is before `deadline`; then stops (and sets `stopped[0]`), so the engine
    finishes the batches it holds and no new one starts. Works for every engine: each stops when its input ends."""
    for batch in batches:
        if deadline is not None and time.time() >= deadline:
            stopped[0] = True
            return
        yield batch


_built: dict[tuple[str, str], object] = {}
_built_lock = threading.Lock()


def built_model(backbone: Backbone, weights: str) -> object:
    """`backbone.build(weights)`, keeping the last one built: repeated `ensure` calls in one process (a
    dataset growing, a cut added, the train and test splits) pay the build (seconds) once."""
    key = (backbone.name, backbone.weights_id(weights))
    with _built_lock:
        if key not in _built:
            _built.clear()
            _built[key] = backbone.build(weights)
        return _built[key]


def frozen_forward(backbone: Backbone, model: object, cuts: Sequence[str]) -> Callable[[np.ndarray], dict]:
    """uint8 pixels (B, size, size, 3) → {cut: float32 array}: one traced call for every batch size."""
    import tensorflow as tf

    extractor = backbone.extractor(model, cuts)
    size = backbone.input_size

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)], reduce_retracing=True)
    def forward(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = extractor(tf.cast(pixels, tf.float32), training=False)
        return {cut: tf.cast(outputs[cut], tf.float32) for cut in cuts}

    return lambda pixels: {cut: value.numpy() for cut, value in forward(pixels).items()}


def extract(
    store: PartStore,
    backbone: Backbone,
    weights: str,
    groups: CutGroups,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    engine: EngineChoice = "auto",
    deadline: float | None = None,
    on_advance: Callable[[int], None] | None = None,
) -> ExtractStats:
    """Compute each group's missing cuts for its images and commit them as parts; the caller holds the lock.

    At `deadline` (wall clock, `time.time()`) no new batch starts: the batches in flight finish, every
    finished batch is committed, and the stats say `interrupted` with the images left. `on_advance(n)` is
    called as images are handled (the run folder's extraction state).
    """
    stats = ExtractStats()
    total = sum(len(records) for records in groups.values())
    if not total:
        return stats
    weights_id = backbone.weights_id(weights)
    stopped = [deadline is not None and time.time() >= deadline]
    writer = PartWriter(store)
    with _progress_bar(progress, total, backbone.name, on_advance) as advance:
        try:
            for labels, records in groups.items():
                if stopped[0]:
                    break
                by_view: dict[str, list[str]] = {}
                for cut, view in map(parse_label, labels):
                    by_view.setdefault(view, []).append(cut)
                cuts = list(dict.fromkeys(cut for view_cuts in by_view.values() for cut in view_cuts))
                view_of: dict[int, str] = {}
                decoded = decoded_batches(records, backbone.resize, batch_size, stats.failed, done=advance)
                with contextlib.closing(decoded):
                    viewed = _viewed(until(decoded, deadline, stopped), by_view, view_of)
                    for batch, values in _activations(backbone, weights, cuts, engine)(viewed):
                        view = view_of.pop(id(batch))
                        for cut in by_view[view]:
                            key = CacheKey(backbone.name, weights_id, cut, backbone.preprocessing_id, view)
                            label = entry_label(cut, view)
                            writer.add(key, batch.sha1s, values[cut])
                            stats.computed_by_cut[label] = stats.computed_by_cut.get(label, 0) + len(batch.sha1s)
                        if view == next(iter(by_view)):  # an image counts once, whatever views it missed
                            stats.computed += len(batch.sha1s)
        finally:
            writer.close()
    stats.bytes = writer.bytes_written
    if stopped[0]:
        stats.interrupted = True
        stats.remaining = total - stats.computed - len(stats.failed)
    return stats


Activations = Callable[[Iterable[Batch]], Iterator[tuple[Batch, dict[str, np.ndarray]]]]
"""Batches in, each batch with {cut: activations} out (in completion order: a batch carries its own sha1s)."""


def _viewed(decoded: Iterable[Batch], views: Iterable[str], view_of: dict[int, str]) -> Iterator[Batch]:
    """Each decoded batch once per missing view, flipped in memory (no second decode); `view_of` records
    which view each yielded batch is, by identity, for when the engine hands it back with its activations."""
    for batch in decoded:
        for view in views:
            seen = Batch(batch.sha1s, apply_view(view, batch.pixels))
            view_of[id(seen)] = view
            yield seen


def _activations(backbone: Backbone, weights: str, cuts: Sequence[str], engine: EngineChoice) -> Activations:
    """The forward pass giving `cuts` on the chosen engine (OpenVINO, else TensorFlow when it cannot).

    `none` is the decoded pixels themselves, stored as they are (uint8), so they skip the engine: a float32
    round trip would hold 4x the memory for the same values.
    """
    computed = [cut for cut in cuts if cut != "none"]

    def with_pixels(batch: Batch, values: dict[str, np.ndarray]) -> tuple[Batch, dict[str, np.ndarray]]:
        return batch, {**values, "none": batch.pixels} if "none" in cuts else values

    if not computed:
        return lambda batches: (with_pixels(batch, {}) for batch in batches)
    if resolve_engine(engine) == "openvino":
        compiled = openvino_frozen(backbone, weights, computed, lambda: built_model(backbone, weights))
        if compiled is not None:
            return lambda batches: (
                with_pixels(batch, values)
                for batch, values in compiled.stream(batches, lambda batch: batch.pixels, computed)
            )
    forward = frozen_forward(backbone, built_model(backbone, weights), computed)
    return lambda batches: (with_pixels(batch, forward(batch.pixels)) for batch in batches)


@contextlib.contextmanager
def _progress_bar(
    enabled: bool, total: int, name: str, on_advance: Callable[[int], None] | None = None
) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr with images/s and ETA, also calling `on_advance`; without `enabled` (tests, Ray
    workers, --json), `on_advance` alone."""
    if not enabled:
        yield on_advance or (lambda _count: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"extracting {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.1f} images/s"),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("extract", total=total, rate=0.0)

        def advance(count: int) -> None:
            done = bar.tasks[0].completed + count
            bar.update(task, advance=count, rate=done / max(time.perf_counter() - start, 1e-9))
            if on_advance is not None:
                on_advance(count)

        yield advance


def group_by_missing(records: Iterable[ImageRecord], missing: Callable[[str], tuple[str, ...]]) -> CutGroups:
    """Group records (first of each sha1) by the cuts they miss; records missing nothing are left out."""
    groups: CutGroups = {}
    seen: set[str] = set()
    for record in records:
        if record.sha1 in seen:
            continue
        seen.add(record.sha1)
        cuts = missing(record.sha1)
        if cuts:
            groups.setdefault(cuts, []).append(record)
    return groups
