"""Bottleneck extraction, TensorFlow against OpenVINO: forward pass alone and end to end (files → Parquet).

    python -m benchmarks.extraction [--backbones efficientnet_lite0,efficientnet_lite2]
                                    [--dataset data/natural_images] [--images 320] [--batch-size 32]

For each backbone, in one process, on the same real photos and batch size:
1. forward only: the frozen part (cut `all`) on uint8 batches already in memory, TensorFlow (one traced
   function) and OpenVINO (`CompiledIR.stream`, the settings of `STREAM_CONFIG`); measured before and after
   the end-to-end runs, so load from other processes weighs on both;
2. end to end: `BottleneckCache.ensure(engine=...)` from the files to committed Parquet parts (read, decode,
   forward, write) into an empty temporary cache. The engine is warmed in the process first (Keras model
   built, IR converted and compiled: once per process and machine), as in a search's later backbones.
Targets (issue 15): OpenVINO end to end >= 0.85 x its forward-only rate and >= 2 x TensorFlow end to end.
Prints a table, writes benchmarks/out/extraction.json and the RESULTS.md section. Other processes on the
machine skew all numbers: the 1-minute load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.engines import openvino_frozen
from automl.cache.extract import DEFAULT_BATCH_SIZE, built_model, decode_file, frozen_forward
from automl.data.dataset import ImageRecord, scan_dataset
from automl.engines.openvino import STREAM_CHUNK
from automl.machine import describe
from benchmarks import results as results_md

TARGET_VS_FORWARD = 0.85
TARGET_VS_TENSORFLOW = 2.0


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): less sensitive to other processes than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def forward_rates(backbone, pixels: np.ndarray, batch_size: int) -> dict[str, float]:
    """Images/s of the frozen part alone, each engine, on uint8 batches held in memory."""
    tensorflow = frozen_forward(backbone, built_model(backbone, "default"), ["all"])
    openvino = openvino_frozen(backbone, "default", ["all"], lambda: built_model(backbone, "default"))
    assert openvino is not None, "OpenVINO could not run the backbone (see the warning)"
    starts = range(0, len(pixels), batch_size)
    tensorflow(pixels[:batch_size])  # trace once, outside the timing
    rates = {}
    start, cpu = time.perf_counter(), cpu_seconds()
    for offset in starts:
        tensorflow(pixels[offset : offset + batch_size])
    rates["tensorflow"] = len(pixels) / (time.perf_counter() - start)
    rates["tensorflow_per_cpu_s"] = len(pixels) / (cpu_seconds() - cpu)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _batch in openvino.stream(starts, lambda offset: pixels[offset : offset + batch_size], ["all"]):
        pass
    rates["openvino"] = len(pixels) / (time.perf_counter() - start)
    rates["openvino_per_cpu_s"] = len(pixels) / (cpu_seconds() - cpu)
    return rates


def end_to_end(backbone, records: list[ImageRecord], engine: str, batch_size: int) -> dict[str, float]:
    """`ensure` into an empty cache: images/s over its whole wall time, and MB written."""
    cpu = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="automl-bench-cache-") as root:
        stats = BottleneckCache(root).ensure(
            backbone, "default", ["all"], records, progress=False, batch_size=batch_size, engine=engine
        )
    cpu = cpu_seconds() - cpu
    assert not stats.failed and stats.computed == len(records), stats.failed[:3]
    return {
        "seconds": stats.seconds,
        "images_per_s": stats.computed / stats.seconds,
        "images_per_cpu_s": stats.computed / cpu,
        "mb_written": stats.bytes / 1e6,
    }


def measure(name: str, records: list[ImageRecord], warmup: list[ImageRecord], batch_size: int) -> dict:
    backbone = get_backbone(name)
    start = time.perf_counter()
    for engine in ("tensorflow", "openvino"):  # build, convert (first time on this machine) and compile
        end_to_end(backbone, warmup, engine, batch_size)
    warm_seconds = time.perf_counter() - start
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in records])
    before = forward_rates(backbone, pixels, batch_size)
    e2e = {engine: end_to_end(backbone, records, engine, batch_size) for engine in ("tensorflow", "openvino")}
    after = forward_rates(backbone, pixels, batch_size)
    forward = {engine: (before[engine] + after[engine]) / 2 for engine in before}  # rates and per-CPU-second rates
    return {
        "warm_up_seconds": warm_seconds,
        "forward_only": {"before": before, "after": after, "mean": forward},
        "end_to_end": e2e,
        "openvino_e2e_vs_forward": e2e["openvino"]["images_per_s"] / forward["openvino"],
        "openvino_e2e_vs_tensorflow_e2e": e2e["openvino"]["images_per_s"] / e2e["tensorflow"]["images_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite2")
    parser.add_argument("--dataset", default="data/natural_images")
    parser.add_argument("--images", type=int, default=320, help="Photos measured (40 more warm the engines up).")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()

    records = scan_dataset(args.dataset, train=0.7, val=0.15, test=0.15, seed=0).records
    step = max(1, len(records) // (args.images + 40))  # spread over the classes (records are sorted by class)
    chosen = records[::step][: args.images + 40]
    warmup, measured = chosen[:40], chosen[40:]
    results: dict[str, object] = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "images": len(measured),
        "batch_size": args.batch_size,
        "load_average_start": load_average(),
        "backbones": {name: measure(name, measured, warmup, args.batch_size) for name in args.backbones.split(",")},
    }
    results["load_average_end"] = load_average()
    results_md.publish(
        "extraction", "Bottleneck extraction: TensorFlow vs OpenVINO (automl.cache)", results, summary(results)
    )


def summary(results: dict) -> str:
    """The RESULTS.md section: both engines, both pipelines, and the two targets as verdicts."""
    rows, checks, per_cpu = [], {}, []
    for name, numbers in results["backbones"].items():
        forward, e2e = numbers["forward_only"], numbers["end_to_end"]
        for engine in ("tensorflow", "openvino"):
            rows.append(
                {
                    "backbone": name,
                    "engine": engine,
                    "forward only, images/s (before / after)": f"{forward['before'][engine]:.1f} / "
                    f"{forward['after'][engine]:.1f}",
                    "end to end: files → Parquet, images/s": f"{e2e[engine]['images_per_s']:.1f}",
                    "end to end / forward only": f"{e2e[engine]['images_per_s'] / forward['mean'][engine]:.2f}",
                    "images per CPU-second: forward only / end to end": f"{forward['mean'][engine + '_per_cpu_s']:.1f}"
                    f" / {e2e[engine]['images_per_cpu_s']:.1f}",
                }
            )
        vs_forward, vs_tf = numbers["openvino_e2e_vs_forward"], numbers["openvino_e2e_vs_tensorflow_e2e"]
        checks[f"{name}: OpenVINO end to end = {vs_forward:.2f} x its forward only (>= {TARGET_VS_FORWARD})"] = (
            vs_forward >= TARGET_VS_FORWARD
        )
        checks[f"{name}: OpenVINO end to end = {vs_tf:.2f} x TensorFlow end to end (>= {TARGET_VS_TENSORFLOW})"] = (
            vs_tf >= TARGET_VS_TENSORFLOW
        )
        openvino_cpu, tensorflow_cpu = e2e["openvino"]["images_per_cpu_s"], e2e["tensorflow"]["images_per_cpu_s"]
        per_cpu.append(
            f"{name}: OpenVINO end to end = {openvino_cpu / forward['mean']['openvino_per_cpu_s']:.2f} x its forward "
            f"only, {openvino_cpu / tensorflow_cpu:.2f} x TensorFlow end to end"
        )
    return (
        f"{results['images']} real photos of natural_images (≤ 288 px), cut `all`, batch {results['batch_size']} "
        f"(OpenVINO requests of {STREAM_CHUNK}: `STREAM_CHUNK`), one process; engines warmed first (model built, "
        "IR converted and compiled). End to end = "
        "`BottleneckCache.ensure` into an empty temporary cache: read, decode (threads, JPEG draft), forward, "
        f"Parquet. 1-minute load average {results['load_average_start']:.1f} at the start, "
        f"{results['load_average_end']:.1f} at the end (other processes' load, if any, weighs on both engines).\n\n"
        + results_md.table(rows)
        + "\n\nImages per CPU-second (this process's user + system time) move less with other processes' load than "
        "wall rates; a machine with two idle cores gives up to twice them in images/s. The same ratios per "
        "CPU-second: "
        + "; ".join(per_cpu)
        + ".\n\nVerdicts (wall time, as the issue states the targets):\n\n"
        + results_md.verdicts(checks)
    )


if __name__ == "__main__":
    main()
