"""What `automl data check` reports about a scanned dataset, as plain data (the CLI renders it or prints JSON).

Counts are per file found (a duplicate is a file), split sizes per distinct image (a duplicate counts once).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from automl.data.dataset import SPLITS, Dataset

EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def check_report(dataset: Dataset) -> dict[str, Any]:
    """Everything a user needs to trust (or fix) a dataset folder, JSON-ready; paths relative to its root."""

    def rel(path: Path) -> str:
        return path.relative_to(dataset.root).as_posix()

    split_of: defaultdict[tuple[int, str], str | None] = defaultdict(lambda: None)  # capped images: no split
    split_of.update(((r.label, r.sha1), r.split) for r in dataset.records)
    label_of = {name: index for index, name in enumerate(dataset.classes)}
    files_per_class = Counter(f.class_name for f in dataset.files)
    classes = [
        {"name": name, "files": files_per_class[name], "images": sum(counts.values()), **counts}
        for name, counts in dataset.split_counts().items()
    ]
    # a file can be both readable and skipped (a copy of an image filed under two classes): count it once
    found = {f.path for f in dataset.files} | {s.path for s in dataset.skipped if not s.path.is_dir()}
    widths = [f.info.width for f in dataset.files]
    heights = [f.info.height for f in dataset.files]
    return {
        "root": str(dataset.root),
        "usable": dataset.problem is None,
        "problem": str(dataset.problem) if dataset.problem else None,
        "totals": {
            "files": len(found),
            "readable": len(dataset.files),
            "images": len(dataset.records),
            "skipped": len(dataset.skipped),
            "classes": len(dataset.classes),
        },
        "splits": {split: len(dataset.split(split)) for split in SPLITS},
        "classes": classes,
        "duplicates": [
            {
                "sha1": group.sha1,
                "paths": [rel(path) for path in group.paths],
                "classes": sorted(set(group.classes)),
                "crosses_classes": group.crosses_classes,
                "splits": sorted(
                    {split_of[(label_of[name], group.sha1)] for name in group.classes if name in label_of} - {None}
                ),
            }
            for group in dataset.duplicates
        ],
        "formats": dict(Counter(f.info.format for f in dataset.files).most_common()),
        "modes": dict(Counter(f.info.mode for f in dataset.files).most_common()),
        "animated": sorted(rel(f.path) for f in dataset.files if f.info.frames > 1),
        "extension_mismatches": [
            {"path": rel(f.path), "extension": f.path.suffix, "format": f.info.format}
            for f in dataset.files
            if EXTENSION_FORMATS.get(f.path.suffix.lower()) != f.info.format
        ],
        "size": {"width": _spread(widths), "height": _spread(heights)},
        "skipped": [{"path": rel(s.path), "reason": s.reason} for s in dataset.skipped],
        "warnings": dataset.warnings,
    }


def _spread(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
