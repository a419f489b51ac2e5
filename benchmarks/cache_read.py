"""Reading bottlenecks back: `BottleneckCache.load` throughput on parts of realistic shapes.

    python -m benchmarks.cache_read [--images 6899] [--repeat 3]

For efficientnet_lite0's three cached shapes (pooled `all` 1280, `top` 7x7x192, `half` 14x14x80), writes
`--images` rows of random activations as float16 parts through the normal writer, then times `load` of all
of them in shuffled order: first in a fresh cache object (every part's SHA-256 is checked, as in a new
process), then again (checked parts are trusted). The files are in the OS page cache in both cases, as
they are when a search reads what it has just extracted. MB/s counts bytes stored on disk; the float32
arrays returned are twice that. Writes benchmarks/out/cache_read.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.store import PartWriter
from automl.machine import describe
from benchmarks import results as results_md

SHAPES = {"all": (1280,), "top": (7, 7, 192), "half": (14, 14, 80)}


def fill(cache: BottleneckCache, backbone, cut: str, shape: tuple[int, ...], sha1s: list[str]) -> int:
    """Write random activations for `sha1s` the way extraction does (32-row batches); returns bytes stored."""
    writer = PartWriter(cache.store)
    key = cache.key(backbone, "default", cut)
    rng = np.random.default_rng(0)
    for offset in range(0, len(sha1s), 32):
        batch = sha1s[offset : offset + 32]
        writer.add(key, batch, rng.normal(size=(len(batch), *shape)).astype(np.float32))
    writer.close()
    return writer.bytes_written


def timed_load(
    root: str, backbone, cut: str, order: list[str], fresh: bool, cache: BottleneckCache
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one load; CPU time is what other processes cannot inflate."""
    reader = BottleneckCache(root) if fresh else cache
    start, cpu = time.perf_counter(), time.process_time()
    features = reader.load(backbone, "default", cut, order)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    assert features.shape == (len(order), *SHAPES[cut]) and features.dtype == np.float32
    return seconds, cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6899)
    parser.add_argument("--repeat", type=int, default=3, help="Best of N timings.")
    args = parser.parse_args()

    backbone = get_backbone("efficientnet_lite0")
    sha1s = [f"{i:040x}" for i in range(args.images)]
    order = list(np.random.default_rng(1).permutation(sha1s))
    results: dict[str, object] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M"), "cuts": {}}
    with tempfile.TemporaryDirectory(prefix="automl-bench-read-") as root:
        cache = BottleneckCache(root)
        for cut, shape in SHAPES.items():
            stored = fill(cache, backbone, cut, shape, sha1s)
            cache.load(backbone, "default", cut, order[:1])  # checks every part once for the warm timings
            checked = min(timed_load(root, backbone, cut, order, True, cache) for _ in range(args.repeat))
            trusted = min(timed_load(root, backbone, cut, order, False, cache) for _ in range(args.repeat))
            trusted_cpu = min(timed_load(root, backbone, cut, order, False, cache)[1] for _ in range(args.repeat))
            results["cuts"][cut] = {
                "shape": shape,
                "images": len(sha1s),
                "parts": len(cache.store.parts(cache.key(backbone, "default", cut))),
                "mb_stored": stored / 1e6,
                "first_load_mb_per_s": stored / checked[0] / 1e6,
                "later_load_mb_per_s": stored / trusted[0] / 1e6,
                "later_load_mb_per_cpu_s": stored / trusted_cpu / 1e6,
                "later_load_images_per_s": len(sha1s) / trusted[0],
            }
    results_md.publish("cache_read", "Bottleneck cache reads (automl.cache)", results, summary(results))


def summary(results: dict) -> str:
    rows = [
        {
            "cut": cut,
            "shape": "x".join(map(str, r["shape"])),
            "images": f"{r['images']:,}",
            "parts": r["parts"],
            "MB stored (float16)": f"{r['mb_stored']:.1f}",
            "first load MB/s (SHA-256 checked)": f"{r['first_load_mb_per_s']:.0f}",
            "later loads MB/s": f"{r['later_load_mb_per_s']:.0f}",
            "later loads MB per CPU-second": f"{r['later_load_mb_per_cpu_s']:.0f}",
            "later loads images/s": f"{r['later_load_images_per_s']:,.0f}",
        }
        for cut, r in results["cuts"].items()
    ]
    return (
        "`BottleneckCache.load` of every image in shuffled order, float32 out; files in the OS page cache; "
        "MB/s of bytes stored (float16), the arrays returned are twice that. "
        "Best of 3 (wall); MB per CPU-second is the rate one idle core would give.\n\n" + results_md.table(rows)
    )


if __name__ == "__main__":
    main()
