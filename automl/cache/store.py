"""Bottleneck parts on disk: Parquet files with a JSON manifest each, written atomically and checksummed.

Layout under the cache root::

    <backbone>-<h(weights_id)>/                  one folder per backbone + weights (h: 12 hex of SHA-256)
        .lock                                    serialises extraction into this folder (flock)
        <cut>-<h(preprocessing_id)>/
            part-<utc ms>-<random>.parquet       columns: sha1 (string), blob (fixed-length bytes)
            part-<utc ms>-<random>.json          manifest: key, rows, dtype, shape, sha256, bytes

One row is one image's activation as raw little-endian bytes: a fixed-length binary cell is the fastest
layout measured here, and any Parquet tool (pandas, pyarrow, DuckDB) reads it. Parquet files are written
with fastparquet and read with pyarrow, which hands the fixed-length column over as one zero-copy buffer
(fastparquet makes one Python object per cell and strips trailing zero bytes from them).

Durability rules:
- every file is written under a temporary name and `os.replace`d into place, so a reader never sees half a
  file; the manifest is written last and is the commit mark: a Parquet file without one is an
  interrupted write, never read, and removed by `prune_stale` once it is old;
- a part is immutable once committed, so its SHA-256 is checked once per process (keyed by path, size
  and mtime) and by `automl cache verify`; a part that fails is reported and deleted, and the images it
  held become missing, so the next extraction recomputes exactly them;
- there is no fsync: a killed process loses nothing committed, and the rarer power loss leaves parts whose
  checksums fail, which the rule above repairs.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from automl.cache.views import ORIGINAL, entry_label
from automl.errors import CacheError

FORMAT_VERSION = 1
PART_GLOB = "part-*.json"
TEMP_PREFIX = ".tmp-"
STALE_AFTER_S = 3600.0
"""Temporary files and uncommitted Parquet files older than this belong to a dead writer."""


def short_hash(text: str) -> str:
    """12 hex digits naming a folder: ids can hold any character, and the manifest keeps the full text."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CacheKey:
    """What a bottleneck depends on besides the image: backbone, its weights, the cut and the preprocessing."""

    backbone: str
    weights_id: str
    cut: str
    preprocessing_id: str
    view: str = ORIGINAL
    """`automl.cache.views`: the original photo or an augmentation of it (e.g. `hflip`)."""

    @property
    def backbone_dir(self) -> str:
        return f"{self.backbone}-{short_hash(self.weights_id)}"

    @property
    def relative_dir(self) -> str:
        """Original views keep the folder they had before views existed, so old caches stay valid."""
        return f"{self.backbone_dir}/{entry_label(self.cut, self.view)}-{short_hash(self.preprocessing_id)}"


@dataclass(frozen=True)
class Manifest:
    """The JSON next to each Parquet part; its presence commits the part."""

    backbone: str
    weights_id: str
    cut: str
    preprocessing_id: str
    rows: int
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    bytes: int
    created: float
    format: int = FORMAT_VERSION
    view: str = ORIGINAL
    """Written only for other views: an original view's manifest stays byte-compatible with older readers,
    which skip (and `cache verify` would delete) a manifest with a key they do not know."""

    @property
    def key(self) -> CacheKey:
        return CacheKey(self.backbone, self.weights_id, self.cut, self.preprocessing_id, self.view)

    def to_json(self) -> builtins.bytes:  # builtins: this dataclass has a field named `bytes`
        fields = asdict(self)
        if self.view == ORIGINAL:
            del fields["view"]
        return json.dumps(fields, indent=1).encode()

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Part:
    """A committed part: its Parquet file and the manifest describing it."""

    path: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return self.path.with_suffix(".json")


@dataclass(frozen=True)
class BadPart:
    """A part that failed its check, with the reason; it has been deleted when `deleted` is set."""

    path: Path
    reason: str
    deleted: bool = False


def storage_dtype(cut: str, values: np.ndarray) -> np.dtype:
    """The dtype a block of activations is stored in.

    Pixels (`none`) are integers in [0, 255]: uint8 is exact. Activations are stored as float16, which
    halves the cache and the read time; benchmarks/RESULTS.md measures that it costs no accuracy. A block
    that float16 cannot hold (values beyond ±65504) stays float32 rather than turning into infinities.
    """
    if cut == "none":
        return np.dtype(np.uint8)
    if values.size and float(np.max(np.abs(values))) >= float(np.finfo(np.float16).max):
        return np.dtype(np.float32)
    return np.dtype(np.float16)


class PartStore:
    """The parts of one cache root. Thread-safe; the check memo is per process."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            raise CacheError(
                f"cache root {text!r}: URLs are not supported yet",
                hint="use a local or shared (NFS, SMB) folder path for the bottleneck cache",
            )
        self.root = Path(text.removeprefix("file://")).expanduser()
        self._checked: dict[Path, tuple[int, int, list[str]]] = {}
        self._lock = threading.Lock()

    # --- writing -----------------------------------------------------------------------------------

    def write_part(self, key: CacheKey, sha1s: Sequence[str], values: np.ndarray) -> Part:
        """Commit `values` (N, *shape) for `sha1s` as one new part; returns it. Atomic (see module doc)."""
        if len(sha1s) != len(values) or not len(values):
            raise ValueError(f"a part needs one or more rows and one sha1 per row, got {len(sha1s)} for {len(values)}")
        dtype = storage_dtype(key.cut, values)
        stored = np.ascontiguousarray(values, dtype=dtype.newbyteorder("<"))
        folder = self.root / key.relative_dir
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{int(time.time() * 1000):013d}-{secrets.token_hex(4)}.parquet"
            digest, size = _write_parquet(path, sha1s, stored)
            manifest = Manifest(
                backbone=key.backbone,
                weights_id=key.weights_id,
                cut=key.cut,
                preprocessing_id=key.preprocessing_id,
                rows=len(stored),
                dtype=dtype.str,
                shape=tuple(int(d) for d in stored.shape[1:]),
                sha256=digest,
                bytes=size,
                created=time.time(),
                view=key.view,
            )
            part = Part(path, manifest)
            _write_atomic(part.manifest_path, manifest.to_json())
        with self._lock:
            self._checked[path] = (*_signature(path), list(sha1s))
        return part

    @contextlib.contextmanager
    def writer_lock(self, key: CacheKey) -> Iterator[None]:
        """Exclusive across processes for one backbone + weights: two builds never compute the same images.

        An advisory `flock`; on a filesystem without working locks two builds may both compute, and the
        reader still serves each sha1 once (the oldest part wins).
        """
        folder = self.root / key.backbone_dir
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / ".lock", "a+b")  # noqa: SIM115 (closed below, after the lock is released)
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- reading -----------------------------------------------------------------------------------

    def parts(self, key: CacheKey | None = None) -> list[Part]:
        """Committed parts of `key` (every part under the root when None), oldest first.

        A manifest that cannot be parsed, or that names another key (a folder-name clash), is skipped here
        and reported by `check_all`.
        """
        pattern = f"{key.relative_dir}/{PART_GLOB}" if key else f"*/*/{PART_GLOB}"
        found = []
        for manifest_path in sorted(self.root.glob(pattern), key=lambda p: p.name):
            manifest = _read_manifest(manifest_path)
            if manifest is not None and (key is None or manifest.key == key):
                found.append(Part(manifest_path.with_suffix(".parquet"), manifest))
        return found

    def check(self, part: Part, *, force: bool = False) -> str | None:
        """None when the part is intact, else why not. Memoised per process unless `force`."""
        return self._checked_sha1s(part, force=force)[1]

    def sha1s(self, part: Part) -> list[str]:
        """The part's sha1 column, in row order (checks the part first; CacheError if it is bad)."""
        sha1s, problem = self._checked_sha1s(part)
        if problem:
            raise CacheError(f"{part.path}: {problem}", hint="run `automl cache verify` to remove it, then rebuild")
        return sha1s

    def read_rows(self, part: Part, rows: np.ndarray, out: np.ndarray, positions: np.ndarray) -> None:
        """Copy the part's `rows` into `out[positions]` as float32, straight from the Parquet buffer."""
        import pyarrow.parquet as pq

        self.sha1s(part)  # checked before trusting its bytes
        manifest = part.manifest
        # No Arrow thread pools: parts are read in parallel by our own threads, and Arrow's pool threads still
        # alive at interpreter exit abort the process ("terminate called without an active exception",
        # apache/arrow#34314: seen here in one of two concurrent `automl cache build`s).
        table = pq.read_table(part.path, columns=["blob"], use_threads=False, pre_buffer=False)
        column = table.column("blob").combine_chunks()
        if column.null_count or len(column) != manifest.rows:
            raise CacheError(f"{part.path}: blob column does not match its manifest", hint="run `automl cache verify`")
        offset = column.offset * manifest.row_bytes
        buffer = column.buffers()[1]
        dtype = np.dtype(manifest.dtype)
        values = np.frombuffer(
            buffer, dtype=dtype, count=manifest.rows * manifest.row_bytes // dtype.itemsize, offset=offset
        ).reshape(manifest.rows, *manifest.shape)
        out[positions] = values[rows]

    def _checked_sha1s(self, part: Part, *, force: bool = False) -> tuple[list[str], str | None]:
        try:
            signature = _signature(part.path)
        except FileNotFoundError:
            return [], "Parquet file is missing (its manifest remains)"
        with self._lock:
            memo = self._checked.get(part.path)
        if memo is not None and memo[:2] == signature and not force:
            return memo[2], None
        sha1s, problem = _check(part)
        if problem is None:
            with self._lock:
                self._checked[part.path] = (*signature, sha1s)
        return sha1s, problem

    # --- maintenance -------------------------------------------------------------------------------

    def delete(self, part: Part) -> None:
        """Remove a part: manifest first, so that no reader ever sees a manifest without its data."""
        part.manifest_path.unlink(missing_ok=True)
        part.path.unlink(missing_ok=True)
        with self._lock:
            self._checked.pop(part.path, None)

    def check_all(self, key: CacheKey | None = None, *, delete: bool = True, force: bool = True) -> list[BadPart]:
        """Check every part (of `key`, or all); bad ones are reported and, with `delete`, removed."""
        bad = []
        pattern = f"{key.relative_dir}/{PART_GLOB}" if key else f"*/*/{PART_GLOB}"
        committed = {part.manifest_path: part for part in self.parts(key)}
        for manifest_path in sorted(self.root.glob(pattern)):
            part = committed.get(manifest_path)
            if part is None:
                if key is not None and _read_manifest(manifest_path) is not None:
                    continue  # another key's part in a clashing folder: not ours to judge
                reason = "manifest is unreadable"
                part_path = manifest_path.with_suffix(".parquet")
                if delete:
                    manifest_path.unlink(missing_ok=True)
                    part_path.unlink(missing_ok=True)
                bad.append(BadPart(part_path, reason, delete))
                continue
            problem = self.check(part, force=force)
            if problem:
                if delete:
                    self.delete(part)
                bad.append(BadPart(part.path, problem, delete))
        return bad

    def prune_stale(self, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove temporary files and uncommitted Parquet files left by writers that died long ago."""
        now = time.time()
        removed = []
        candidates = [*self.root.glob(f"*/*/{TEMP_PREFIX}*"), *self.root.glob("*/*/part-*.parquet")]
        for path in candidates:
            uncommitted = path.name.startswith(TEMP_PREFIX) or not path.with_suffix(".json").exists()
            with contextlib.suppress(FileNotFoundError):
                if uncommitted and now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    removed.append(path)
        return removed


@contextlib.contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """Turn a failed write (read-only folder, disk full, a file where a folder should be) into a CacheError."""
    try:
        yield
    except OSError as exc:
        raise CacheError(
            f"{folder}: cannot write to the bottleneck cache ({exc.strerror or exc})",
            hint="point $AUTOML_CACHE or the recipe's `cache:` at a writable folder with free space; "
            "`automl cache prune --max-size 10GB` frees some",
        ) from exc


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _sha256(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


def _write_parquet(path: Path, sha1s: Sequence[str], stored: np.ndarray) -> tuple[str, int]:
    """Write the part's Parquet file under a temporary name, then rename it; returns its SHA-256 and size."""
    import fastparquet
    import pandas as pd

    frame = pd.DataFrame({"sha1": pd.Series(list(sha1s), dtype=object), "blob": [row.tobytes() for row in stored]})
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    try:
        fastparquet.write(str(temp), frame, fixed_text={"blob": stored[0].nbytes}, compression=None, stats=False)
        checksum = _sha256(temp.read_bytes())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return checksum


def _write_atomic(path: Path, data: bytes) -> None:
    """Like `automl.atomic.write_atomic`, but under `TEMP_PREFIX`, which `prune_stale` recognises and clears."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _read_manifest(path: Path) -> Manifest | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["shape"] = tuple(raw["shape"])
        manifest = Manifest(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return manifest if manifest.format == FORMAT_VERSION else None


def _check(part: Part) -> tuple[list[str], str | None]:
    """Size, SHA-256, then the sha1 column against the manifest: each catches a different kind of damage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = part.manifest
    data = part.path.read_bytes()
    if len(data) != manifest.bytes:
        return [], f"truncated or resized: {len(data):,} bytes on disk, {manifest.bytes:,} committed"
    if _sha256(data)[0] != manifest.sha256:
        return [], "checksum mismatch: the file's bytes changed after it was written"
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        blob_type = parquet.schema_arrow.field("blob").type
        sha1s = parquet.read(columns=["sha1"], use_threads=False).column("sha1").to_pylist()
    except (pa.ArrowException, OSError, KeyError) as exc:
        return [], f"unreadable Parquet ({exc})"
    if len(sha1s) != manifest.rows or getattr(blob_type, "byte_width", -1) != manifest.row_bytes:
        return [], f"content does not match the manifest ({len(sha1s)} rows of {blob_type})"
    return [str(s) for s in sha1s], None


class PartWriter:
    """Buffers activations per key and commits a part whenever one holds enough, in a background thread.

    Parts are bounded (`part_bytes` held in memory, `part_rows`) so that a killed extraction keeps what it
    flushed, and a damaged part costs only its own images to recompute. Writing overlaps the next forward pass,
    but at most one write is in flight: the next flush waits for it and raises its error (a full disk stops the
    extraction at the next part, not after it), and memory holds one part being written besides the buffers.
    """

    def __init__(self, store: PartStore, *, part_bytes: int = 64 << 20, part_rows: int = 4096) -> None:
        self.store = store
        self.part_bytes = part_bytes
        self.part_rows = part_rows
        self.bytes_written = 0
        self._buffers: dict[CacheKey, tuple[list[str], list[np.ndarray]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automl-cache-writer")
        self._in_flight: Future[None] | None = None

    def add(self, key: CacheKey, sha1s: Sequence[str], values: np.ndarray) -> None:
        """Buffer rows of `key`; commits a part when the buffer is full. Raises the previous write's error."""
        buffered_sha1s, blocks = self._buffers.setdefault(key, ([], []))
        buffered_sha1s.extend(sha1s)
        blocks.append(values)
        if len(buffered_sha1s) >= self.part_rows or sum(block.nbytes for block in blocks) >= self.part_bytes:
            self._flush(key)

    def close(self) -> None:
        """Commit everything buffered and wait; raises a write error not raised yet."""
        try:
            for key in list(self._buffers):
                self._flush(key)
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _flush(self, key: CacheKey) -> None:
        self._wait()
        sha1s, blocks = self._buffers.pop(key, ([], []))
        if sha1s:
            self._in_flight = self._pool.submit(self._write, key, sha1s, np.concatenate(blocks))

    def _wait(self) -> None:
        """Wait for the write in flight; on its error drop every buffer (the store cannot take them) and raise."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            in_flight.result()
        except Exception:
            self._buffers.clear()
            raise

    def _write(self, key: CacheKey, sha1s: list[str], values: np.ndarray) -> None:
        self.bytes_written += self.store.write_part(key, sha1s, values).manifest.bytes


def select_for_pruning(
    parts: Sequence[Part],
    *,
    backbone: str | None = None,
    older_than_s: float | None = None,
    max_bytes: int | None = None,
    now: float | None = None,
) -> list[Part]:
    """Parts to delete: all of `backbone`, those created more than `older_than_s` ago, then the oldest
    others until the rest fit in `max_bytes`. Criteria add up; none given selects nothing."""
    now = time.time() if now is None else now
    chosen = [
        part
        for part in parts
        if (backbone is not None and part.manifest.backbone == backbone)
        or (older_than_s is not None and now - part.manifest.created > older_than_s)
    ]
    if max_bytes is not None:
        chosen_paths = {part.path for part in chosen}
        kept = sorted((p for p in parts if p.path not in chosen_paths), key=lambda part: part.manifest.created)
        total = sum(part.manifest.bytes for part in kept)
        for part in kept:
            if total <= max_bytes:
                break
            chosen.append(part)
            total -= part.manifest.bytes
    return chosen
