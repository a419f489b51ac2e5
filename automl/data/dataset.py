"""Scan a folder of photos (one sub-folder per class) into labelled, split image records.

Identity: an image is the SHA-1 of its bytes. Exact duplicates inside one class count once; the same bytes
in two classes is a labelling error: every copy is skipped with a reason naming the other classes, since
no label can be right for both.

Split: each image gets a number u = H(seed, sha1) in [0, 1) and lands in train, val or test by comparing u
with the fractions, class by class. So the split depends only on the bytes and the seed: duplicates share
a split, a new image never moves an old one, and a new seed gives a new split. Per class the split is
stratified in expectation (the fractions hold per class, not just overall).
Grouping (optional, `groups`): near-duplicates (the same photo re-encoded, resized or cropped; found by the
audit, `automl.audit`) have different bytes, so the hash alone may put them in different splits and the test
score then partly measures memory. With `groups` = {sha1: the sha1 of its group's member with the smallest
SHA-1}, every member takes that member's u: the whole group lands in one split (and, through the same
representative, in one fold). Without groups the split is the plain hash split.
Guarantee: a class of at least 3 images gets at least 1 train, 1 val and 1 test image. When the hash leaves
a split empty, the image whose u lies closest to the empty split's interval moves there, taken only from a
split that keeps at least one image. This moves the fewest images possible and only in classes where the
hash alone failed the guarantee (tiny classes); there, adding images may send a moved image back to its
hash split. A class of 1-2 images cannot have all three: it goes wholly to train, with a warning.

Cost: a scan must be cheap enough to run at the start of every search. The first time a file is seen it is
read once (SHA-1) and, with `verify` (the default), decoded once at a small size (JPEG DCT scaling makes
that cheap) so that truncated or corrupt files are skipped before they take a place in a split. The result
is kept in a per-dataset scan index in the user cache folder, keyed by (relative path, size, mtime_ns):
a rescan of an unchanged folder is stat-only, and a search on a warm bottleneck cache decodes nothing.
`verify=False` reads headers only (what `automl data check --fast` does): truncation then goes unseen until
the extractor decodes the file, and the extractor reports it as skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import PIL
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from automl.atomic import write_atomic
from automl.data.files import FileRefused, is_system_folder, read_bounded
from automl.data.images import ImageError, ImageInfo, probe_image, verify_image
from automl.errors import DatasetError
from automl.machine import usable_cpus
from automl.paths import resolve_dataset, user_cache_dir

if TYPE_CHECKING:
    from automl.recipe import DataSection

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
MIN_IMAGES_FOR_SPLIT = 3
_COUNTED_IN_SUBFOLDERS = 10_000
"""Files counted in a sub-folder of a class before the count says `10,000+` (it is reported, never used)."""
_INDEX_VERSION = f"2/pillow-{PIL.__version__}"
"""Entries from another layout or Pillow (which may decode differently) are not trusted."""


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) found in the dataset and not used, with the reason a user can act on."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ScannedFile:
    """A readable image file of a class folder (in-class duplicates included)."""

    path: Path
    class_name: str
    sha1: str
    info: ImageInfo


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: what the cache and the trials see. One per distinct content in a class."""

    path: Path
    sha1: str
    label: int
    split: Split


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with the same bytes. Across classes, a labelling error (every copy is skipped)."""

    sha1: str
    paths: tuple[Path, ...]
    classes: tuple[str, ...]

    @property
    def crosses_classes(self) -> bool:
        return len(set(self.classes)) > 1


@dataclass
class Dataset:
    """The scanned folder: classes (sorted), records (split), and everything that was not used."""

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    files: list[ScannedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problem: DatasetError | None = None
    """Why the folder cannot be used (fewer than 2 usable classes); set only with `allow_unusable`."""
    groups: dict[str, str] = field(default_factory=dict)
    """Near-duplicate groups the split kept together: {sha1: its group's representative sha1} (module docstring)."""

    def group_key(self, sha1: str) -> str:
        """What decides an image's split, and should decide its fold: its group's representative, else itself."""
        return self.groups.get(sha1, sha1)

    def split(self, name: Split) -> list[ImageRecord]:
        return [record for record in self.records if record.split == name]

    def split_counts(self) -> dict[str, dict[Split, int]]:
        """Images per class and split: {class: {"train": n, "val": n, "test": n}}."""
        counts = {name: dict.fromkeys(SPLITS, 0) for name in self.classes}
        for record in self.records:
            counts[self.classes[record.label]][record.split] += 1
        return counts

    @classmethod
    def from_recipe(
        cls,
        data: DataSection,
        *,
        verify: bool = True,
        progress: bool = False,
        groups: Mapping[str, str] | None = None,
    ) -> Dataset:
        """Scan the recipe's `data` folder (resolved under the data root) with its fractions and seed.

        `groups`: near-duplicate groups to keep in one split (see the module docstring); the recipe's
        `data.group_near_duplicates` asks for them, `automl.audit.grouping.dataset_for_recipe` computes them.
        """
        return scan_dataset(
            resolve_dataset(data.folder),
            train=data.train,
            val=data.val,
            test=data.test,
            seed=data.seed,
            max_per_class=data.max_per_class,
            verify=verify,
            progress=progress,
            groups=groups,
        )


def scan_dataset(
    root: str | os.PathLike[str],
    *,
    train: float,
    val: float,
    test: float,
    seed: int,
    max_per_class: int | None = None,
    verify: bool = True,
    progress: bool = False,
    use_index: bool = True,
    allow_unusable: bool = False,
    groups: Mapping[str, str] | None = None,
) -> Dataset:
    """Scan `root/<class>/<file>`; raise `DatasetError` when the folder cannot be used at all.

    `verify` decodes each new file once (see the module docstring); `use_index=False` ignores the scan
    index and re-reads every file; `allow_unusable` returns a folder with fewer than 2 usable classes with
    `problem` set instead of raising, so that `automl data check` can still list what it found. `groups`
    maps a sha1 to its group's representative sha1: the group then shares one split (module docstring).
    """
    root = Path(root)
    fractions: dict[Split, float] = {"train": train, "val": val, "test": test}
    if any(value <= 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise DatasetError(f"split fractions must be positive and sum to 1, got {fractions}")
    _check_root(root)
    class_dirs, candidates, skipped = _walk(root)
    if not class_dirs:
        raise DatasetError(
            f"{root}: no class folders found",
            hint="put one sub-folder per class in it, e.g. cats/ and dogs/, each holding that class's photos",
        )
    index = _ScanIndex(root, verify) if use_index else None
    scanned = _examine(root, candidates, index, verify, progress, skipped)
    if index is not None:
        index.save({path.relative_to(root).as_posix() for path in candidates})

    duplicates, conflicts = _duplicate_groups(scanned)
    skipped.extend(conflicts)
    conflicted = {item.path for item in conflicts}
    unique = _unique_by_class(file for file in scanned if file.path not in conflicted)

    classes, warnings = _usable_classes(class_dirs, unique, {path.parent.name for path in candidates})
    problem = None
    if len(classes) < 2:
        problem = DatasetError(
            f"{root}: {len(classes)} usable class{'es' if len(classes) != 1 else ''} "
            f"({', '.join(classes) or 'none'}); a classifier needs at least 2",
            hint="put each class's photos in its own sub-folder; `automl data check` lists every skipped file",
        )
        if not allow_unusable:
            raise problem

    records: list[ImageRecord] = []
    for label, name in enumerate(classes):
        files = unique[name]
        if max_per_class is not None and len(files) > max_per_class:
            files = sorted(files, key=lambda f: unit_hash(seed, f.sha1, "cap"))[:max_per_class]
        splits, warning = _split_class(name, [f.sha1 for f in files], fractions, seed, groups or {})
        if warning:
            warnings.append(warning)
        records.extend(ImageRecord(f.path, f.sha1, label, splits[f.sha1]) for f in files)
    records.sort(key=lambda r: (r.label, str(r.path)))
    skipped.sort(key=lambda s: str(s.path))
    return Dataset(root, classes, records, scanned, skipped, duplicates, warnings, problem, dict(groups or {}))


def _usable_classes(
    class_dirs: list[str], unique: dict[str, list[ScannedFile]], with_files: set[str]
) -> tuple[list[str], list[str]]:
    """The class folders holding at least one usable image, and a warning for each one left out."""
    classes, warnings = [], []
    for name in class_dirs:
        if unique.get(name):
            classes.append(name)
        else:
            found = "has no usable image" if name in with_files else "is empty"
            warnings.append(f"class folder '{name}' {found}: it is left out; add images to it or remove the folder")
    return classes, warnings


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found", hint="check the path, or set $AUTOML_DATA")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder", hint="give the folder that holds one sub-folder per class")
    if is_system_folder(root):
        raise DatasetError(f"{root}: a system folder, not a dataset", hint="give the folder of class sub-folders")


def _walk(root: Path) -> tuple[list[str], list[Path], list[SkippedFile]]:
    """Class folders, the candidate files inside them, and what was skipped on the way.

    Nothing here follows a link out of the dataset into a tree: a class folder may be a link (a dataset
    assembled from links), but a link to a folder inside a class is reported, never walked, and an entry
    whose target cannot even be examined (permission, loop) is skipped with its reason.
    """
    class_dirs: list[str] = []
    candidates: list[Path] = []
    skipped: list[SkippedFile] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            skipped.append(SkippedFile(entry, "hidden file or folder: names starting with '.' are ignored"))
        elif (kind := _kind(entry, skipped)) == "dir":
            class_dirs.append(entry.name)
            candidates.extend(_class_files(entry, skipped))
        elif kind is not None:
            skipped.append(SkippedFile(entry, "file at the top level: images must sit in a class sub-folder"))
    return class_dirs, candidates, skipped


def _kind(entry: Path, skipped: list[SkippedFile]) -> str | None:
    """'dir', 'file' or 'other' for what `entry` points to; None (and a skipped entry) when it cannot be stat'ed."""
    try:
        mode = entry.stat().st_mode
    except OSError as exc:
        reason = exc.strerror or str(exc)
        what = "broken or unreadable link" if entry.is_symlink() else "cannot be examined"
        skipped.append(SkippedFile(entry, f"{what} ({reason}): fix its permissions or remove it"))
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _class_files(folder: Path, skipped: list[SkippedFile]) -> Iterator[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        skipped.append(SkippedFile(folder, f"class folder cannot be listed ({exc.strerror or exc})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            skipped.append(SkippedFile(entry, "hidden file: names starting with '.' are ignored"))
            continue
        kind = _kind(entry, skipped)
        if kind == "dir" and entry.is_symlink():
            skipped.append(
                SkippedFile(entry, "link to a folder inside a class: not followed; link the photos themselves instead")
            )
        elif kind == "dir":
            found = (p for p in entry.rglob("*") if not p.is_symlink() and p.is_file())
            inside = sum(1 for _ in itertools.islice(found, _COUNTED_IN_SUBFOLDERS))  # a huge tree is not walked
            count = f"{inside:,}" + ("+" if inside == _COUNTED_IN_SUBFOLDERS else "")
            skipped.append(
                SkippedFile(
                    entry,
                    f"sub-folder inside a class ({count} file{'' if inside == 1 else 's'} not used): move its "
                    f"images up into '{folder.name}/', or make it a class of its own",
                )
            )
        elif kind == "file":
            yield entry
        elif kind == "other":
            skipped.append(SkippedFile(entry, "not a regular file (FIFO, socket or device): not read"))


def _examine(
    root: Path,
    candidates: list[Path],
    index: _ScanIndex | None,
    verify: bool,
    progress: bool,
    skipped: list[SkippedFile],
) -> list[ScannedFile]:
    """SHA-1 and header (and, with `verify`, a decode) of every candidate, from the index when unchanged."""

    def examine(path: Path) -> ScannedFile | SkippedFile:
        relative = path.relative_to(root).as_posix()
        try:
            stat = path.stat()
            entry = index.lookup(relative, stat) if index is not None else None
            if entry is None:
                entry = _read_entry(path, stat, verify)
                if index is not None:
                    index.store(relative, entry)
        except FileRefused as exc:
            return SkippedFile(path, str(exc))
        except OSError as exc:
            return SkippedFile(path, f"cannot read: {exc.strerror or exc}")
        if entry.error is not None:
            return SkippedFile(path, entry.error)
        assert entry.info is not None
        return ScannedFile(path, path.parent.name, entry.sha1, entry.info)

    scanned: list[ScannedFile] = []
    workers = min(8, usable_cpus())
    with ThreadPoolExecutor(max_workers=workers) as pool, _progress_bar(progress, len(candidates)) as advance:
        for result in pool.map(examine, candidates):
            advance()
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                scanned.append(result)
    return scanned


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    columns = (
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scan", total=total)
        yield lambda: bar.advance(task)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} files/s")


@dataclass
class _Entry:
    """What the scan index remembers about one file version."""

    size: int
    mtime_ns: int
    sha1: str
    info: ImageInfo | None
    error: str | None
    verified: bool


def _read_entry(path: Path, stat: os.stat_result, verify: bool) -> _Entry:
    data = read_bounded(path)  # a regular file of at most MAX_FILE_BYTES, even if swapped since the walk
    sha1 = hashlib.sha1(data).hexdigest()
    info, error = None, None
    try:
        info = verify_image(data) if verify else probe_image(data)
    except ImageError as exc:
        info, error = None, exc.reason
    return _Entry(stat.st_size, stat.st_mtime_ns, sha1, info, error, verify)


class _ScanIndex:
    """Per-dataset memo of (relative path, size, mtime_ns) -> SHA-1, header and decode verdict.

    Lives in the user cache folder (never inside the user's dataset), written atomically; a missing or
    unreadable index just means a full rescan.
    """

    def __init__(self, root: Path, verify: bool) -> None:
        key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:20]
        self.path = user_cache_dir() / "scans" / f"{key}.json"
        self.verify = verify
        self.entries: dict[str, _Entry] = {}
        self.changed = False
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") == _INDEX_VERSION:
                for name, value in raw["files"].items():
                    info = ImageInfo(**value["info"]) if value["info"] else None
                    self.entries[name] = _Entry(**{**value, "info": info})
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def lookup(self, relative: str, stat: os.stat_result) -> _Entry | None:
        entry = self.entries.get(relative)
        if entry is None or entry.size != stat.st_size or entry.mtime_ns != stat.st_mtime_ns:
            return None
        if self.verify and not entry.verified and entry.error is None:
            return None  # known only from its header; this scan wants a decode
        return entry

    def store(self, relative: str, entry: _Entry) -> None:
        self.entries[relative] = entry
        self.changed = True

    def save(self, present: set[str]) -> None:
        """Write the index if anything changed, dropping files that are gone. Failure is harmless."""
        gone = self.entries.keys() - present
        if not self.changed and not gone:
            return
        for name in gone:
            del self.entries[name]
        payload = {"version": _INDEX_VERSION, "files": {name: asdict(e) for name, e in self.entries.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(payload))
        except OSError:
            return


def _duplicate_groups(scanned: list[ScannedFile]) -> tuple[list[DuplicateGroup], list[SkippedFile]]:
    """Groups of identical files, and the copies skipped because their bytes sit in several classes."""
    by_sha1: dict[str, list[ScannedFile]] = defaultdict(list)
    for file in scanned:
        by_sha1[file.sha1].append(file)
    groups: list[DuplicateGroup] = []
    conflicts: list[SkippedFile] = []
    for sha1, files in by_sha1.items():
        if len(files) < 2:
            continue
        group = DuplicateGroup(sha1, tuple(f.path for f in files), tuple(f.class_name for f in files))
        groups.append(group)
        if group.crosses_classes:
            classes = ", ".join(sorted(set(group.classes)))
            conflicts.extend(
                SkippedFile(
                    f.path,
                    f"labelling error: the same image is in classes {classes}; keep it in one class only",
                )
                for f in files
            )
    groups.sort(key=lambda g: str(g.paths[0]))
    return groups, conflicts


def _unique_by_class(files: Iterable[ScannedFile]) -> dict[str, list[ScannedFile]]:
    """One file per distinct content in each class: the first path in sorted order."""
    by_class: dict[str, dict[str, ScannedFile]] = defaultdict(dict)
    for file in sorted(files, key=lambda f: str(f.path)):
        by_class[file.class_name].setdefault(file.sha1, file)
    return {name: list(files.values()) for name, files in by_class.items()}


def unit_hash(seed: int, sha1: str, purpose: str = "split") -> float:
    """A number in [0, 1) fixed by (seed, content): stable across runs, machines and Python versions."""
    digest = hashlib.sha1(f"{purpose}:{seed}:{sha1}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_class(
    name: str, sha1s: list[str], fractions: dict[Split, float], seed: int, groups: Mapping[str, str]
) -> tuple[dict[str, Split], str | None]:
    """Each image's split by its hash, then the one-image-per-split guarantee (see the module docstring)."""
    if len(sha1s) < MIN_IMAGES_FOR_SPLIT:
        missing = MIN_IMAGES_FOR_SPLIT - len(sha1s)
        warning = (
            f"class '{name}' has only {len(sha1s)} image{'s' if len(sha1s) > 1 else ''}: all go to train, so "
            f"nothing validates or tests it; add at least {missing} more (20 or more for a meaningful accuracy)"
        )
        return dict.fromkeys(sha1s, "train"), warning
    bounds = {
        "train": (0.0, fractions["train"]),
        "val": (fractions["train"], fractions["train"] + fractions["val"]),
        "test": (fractions["train"] + fractions["val"], 1.0),
    }
    position = {sha1: unit_hash(seed, groups.get(sha1, sha1)) for sha1 in sha1s}
    splits: dict[str, Split] = {
        sha1: "train" if u < bounds["val"][0] else "val" if u < bounds["test"][0] else "test"
        for sha1, u in position.items()
    }
    for needed in SPLITS:
        counts = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
        if counts[needed]:
            continue
        low, high = bounds[needed]
        donors = [sha1 for sha1, s in splits.items() if counts[s] > 1 and s != needed]
        nearest = min(donors, key=lambda sha1: max(low - position[sha1], position[sha1] - high, 0.0))
        splits[nearest] = needed
    return splits, None
