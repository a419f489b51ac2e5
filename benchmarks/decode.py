"""Decode and scan throughput: what `decode_image` and `scan_dataset` cost on this machine.

    python -m benchmarks.decode [--images 300] [--dataset data/natural_images]

Measures, on one core: decoding the dataset's own photos to 224 px; decoding large (2400x1800) JPEGs to
224 px with DCT scaling (`draft`, what decode_image does) against a full-size decode then resize; and
`scan_dataset` cold (every file read and decode-checked) against warm (stat-only, from the scan index).
Prints a table, writes benchmarks/out/decode.json and replaces the `decode` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from automl.data.images import decode_image
from automl.data.resize import Resize
from benchmarks.results import publish, table

RESIZE = Resize(size=224, crop_fraction=0.875, resample="bicubic")


def rate(function: Callable[[bytes], object], blobs: list[bytes], repeat: int = 3) -> float:
    """Best images/s over `repeat` passes (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for blob in blobs:
            function(blob)
        best = min(best, time.perf_counter() - start)
    return len(blobs) / best


def full_decode_then_resize(blob: bytes) -> np.ndarray:
    image = Image.fromarray(decode_image(blob))
    side = RESIZE.crop_fraction * min(image.size)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    box = (left, top, left + side, top + side)
    return np.asarray(image.resize((RESIZE.size, RESIZE.size), Image.Resampling.BICUBIC, box=box))


def large_jpegs(paths: list[Path], count: int) -> list[bytes]:
    blobs = []
    for path in paths[:count]:
        with Image.open(path) as image:
            big = image.convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def scan_seconds(dataset: Path) -> dict[str, float]:
    from automl.data.dataset import scan_dataset

    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        timings = {}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            scan_dataset(dataset, train=0.7, val=0.15, test=0.15, seed=0)
            timings[label] = time.perf_counter() - start
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--dataset", type=Path, default=Path("data/natural_images"))
    args = parser.parse_args()

    every_jpeg = sorted(args.dataset.rglob("*.jpg"))
    jpegs = every_jpeg[:: max(1, len(every_jpeg) // args.images)][: args.images]  # spread over all classes
    blobs = [path.read_bytes() for path in jpegs]
    big = large_jpegs(jpegs, 40)
    results = {
        "dataset_jpeg_to_224_img_per_s": rate(lambda b: decode_image(b, RESIZE), blobs),
        "large_jpeg_draft_to_224_img_per_s": rate(lambda b: decode_image(b, RESIZE), big),
        "large_jpeg_full_decode_then_resize_img_per_s": rate(full_decode_then_resize, big),
    }
    results["draft_speed_up"] = (
        results["large_jpeg_draft_to_224_img_per_s"] / results["large_jpeg_full_decode_then_resize_img_per_s"]
    )
    scan = scan_seconds(args.dataset)
    results |= {"scan_cold_s": scan["cold"], "scan_warm_s": scan["warm"], "dataset": str(args.dataset)}

    rows = [
        {"measure": key, "value": f"{value:.2f}" if isinstance(value, float) else value}
        for key, value in results.items()
    ]
    publish("decode", "Decode and scan throughput (automl.data)", results, table(rows))


if __name__ == "__main__":
    main()
