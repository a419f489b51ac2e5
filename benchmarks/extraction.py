"""Bottleneck extraction throughput: files on disk → Parquet, against the forward pass alone and plain Keras.

    python -m benchmarks.extraction [--backbone efficientnet_lite0] [--dataset data/natural_images]
                                    [--limit N] [--upscaled N] [--batch-size 32]

Measured in one run, same model, same batch size:
1. forward only: the frozen part on uint8 tensors already in memory (the ceiling);
2. end to end: `BottleneckCache.ensure` from the files to committed Parquet parts (model build, decode,
   forward, write), into an empty cache;
3. the same photos upscaled to about 2 megapixels (generated into a temporary folder, deleted after):
   `ensure` against the plain Keras way, `keras.utils.image_dataset_from_directory` + `model.predict`.
Prints a table and writes benchmarks/out/extraction.json. Needs the backbone's weights offline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.extract import decode_file, frozen_forward
from automl.data.dataset import ImageRecord, scan_dataset
from automl.machine import describe
from benchmarks import results as results_md

TWO_MEGAPIXELS = 2_000_000


def forward_only(backbone, model, records: list[ImageRecord], batch_size: int) -> float:
    """Images/s of the frozen part alone on decoded uint8 batches held in memory."""
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in records])
    forward = frozen_forward(backbone, model, ["all"])
    forward(pixels[:batch_size])  # trace once, outside the timing
    start = time.perf_counter()
    for offset in range(0, len(pixels), batch_size):
        forward(pixels[offset : offset + batch_size])
    return len(pixels) / (time.perf_counter() - start)


def end_to_end(backbone, weights: str, records: list[ImageRecord], batch_size: int) -> dict[str, float]:
    """`ensure` into an empty cache: images/s over its whole wall time, and MB written."""
    with tempfile.TemporaryDirectory(prefix="automl-bench-cache-") as root:
        stats = BottleneckCache(root).ensure(backbone, weights, ["all"], records, progress=True, batch_size=batch_size)
    assert not stats.failed, stats.failed[:3]
    return {
        "images": stats.computed,
        "seconds": stats.seconds,
        "images_per_s": stats.computed / stats.seconds,
        "mb_written": stats.bytes / 1e6,
    }


def _upscale(job: tuple[Path, Path]) -> None:
    from PIL import Image

    source, target = job
    with Image.open(source) as image:
        image = image.convert("RGB")
        scale = (TWO_MEGAPIXELS / (image.width * image.height)) ** 0.5
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.Resampling.BICUBIC).save(target, "JPEG", quality=90)


def upscaled_copies(records: list[ImageRecord], classes: list[str], folder: Path) -> list[ImageRecord]:
    """~2 MP JPEG copies of the photos, one sub-folder per class, as records with the same sha1 keys."""
    jobs = []
    copies = []
    for index, record in enumerate(records):
        target = folder / classes[record.label] / f"{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((record.path, target))
        copies.append(ImageRecord(target, f"{index:040x}", record.label, record.split))
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_upscale, jobs, chunksize=16))
    return copies


def plain_keras(model, folder: Path, size: int, batch_size: int) -> dict[str, float]:
    """The usual tutorial pipeline: Keras' directory loader (full decode, resize) feeding model.predict."""
    import keras

    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=(size, size), batch_size=batch_size, shuffle=False, verbose=False
    )
    features = model.predict(dataset, verbose=0)
    seconds = time.perf_counter() - start
    return {"images": len(features), "seconds": seconds, "images_per_s": len(features) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--dataset", default="data/natural_images")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N photos.")
    parser.add_argument("--upscaled", type=int, default=None, help="Photos to upscale to 2 MP (default: all used).")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    backbone = get_backbone(args.backbone)
    dataset = scan_dataset(args.dataset, train=0.7, val=0.15, test=0.15, seed=0)
    records = dataset.records[: args.limit]
    model = backbone.build(args.weights)
    results: dict[str, object] = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backbone": args.backbone,
        "weights": args.weights,
        "batch_size": args.batch_size,
        "images": len(records),
    }

    before = forward_only(backbone, model, records, args.batch_size)
    e2e = end_to_end(backbone, args.weights, records, args.batch_size)
    after = forward_only(backbone, model, records, args.batch_size)
    forward = (before + after) / 2  # bracketing e2e evens out load from other processes
    results["original"] = {
        "forward_only_images_per_s": [before, after],
        "end_to_end": e2e,
        "ratio_end_to_end_vs_forward": e2e["images_per_s"] / forward,
    }

    upscaled = records[: args.upscaled]
    with tempfile.TemporaryDirectory(prefix="automl-bench-2mp-") as folder:
        start = time.perf_counter()
        copies = upscaled_copies(upscaled, dataset.classes, Path(folder))
        generated = time.perf_counter() - start
        keras_way = plain_keras(model, Path(folder), backbone.input_size, args.batch_size)
        ours = end_to_end(backbone, args.weights, copies, args.batch_size)
    results["upscaled_2mp"] = {
        "images": len(copies),
        "generation_seconds": generated,
        "plain_keras": keras_way,
        "end_to_end": ours,
        "ratio_ours_vs_plain_keras": ours["images_per_s"] / keras_way["images_per_s"],
    }

    results_md.publish("extraction", "Bottleneck extraction (automl.cache)", results, summary(results))


def summary(results: dict) -> str:
    """The RESULTS.md section: both comparisons the issue asks for, as ratios measured in the same run."""
    original, upscaled = results["original"], results["upscaled_2mp"]
    forward = original["forward_only_images_per_s"]
    rows = [
        {
            "photos": f"{results['images']:,} originals (≤288 px)",
            "pipeline": "forward only, tensors in memory",
            "images/s": " / ".join(f"{r:.1f}" for r in forward) + " (before / after)",
            "ratio": "1",
        },
        {
            "photos": f"{results['images']:,} originals (≤288 px)",
            "pipeline": "end to end: files → Parquet (ensure)",
            "images/s": f"{original['end_to_end']['images_per_s']:.1f}",
            "ratio": f"{original['ratio_end_to_end_vs_forward']:.2f} × forward only",
        },
        {
            "photos": f"{upscaled['images']:,} copies at ~2 MP",
            "pipeline": "plain Keras: image_dataset_from_directory + predict",
            "images/s": f"{upscaled['plain_keras']['images_per_s']:.1f}",
            "ratio": "1",
        },
        {
            "photos": f"{upscaled['images']:,} copies at ~2 MP",
            "pipeline": "end to end: files → Parquet (ensure)",
            "images/s": f"{upscaled['end_to_end']['images_per_s']:.1f}",
            "ratio": f"{upscaled['ratio_ours_vs_plain_keras']:.2f} × plain Keras",
        },
    ]
    return (
        f"{results['backbone']} (weights {results['weights']}), batch {results['batch_size']}, cut `all`. "
        "End to end includes building the model, decoding, the forward pass and committing Parquet parts.\n\n"
        + results_md.table(rows)
    )


if __name__ == "__main__":
    main()
