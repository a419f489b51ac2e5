"""Which OpenVINO CPU settings run the frozen part fastest here: the numbers behind `STREAM_CONFIG`.

    python -m benchmarks.openvino_settings [--backbone efficientnet_lite0] [--images 256] [--rounds 3]

Forward only, uint8 batches already in memory, on the cached IR of the backbone's `all` cut. Every setting
runs once per round, round-robin, so load from other processes spreads over all of them; the median of the
rounds is reported. "stream" feeds `CompiledIR.stream` (an `AsyncInferQueue` with OpenVINO's optimal number
of requests plus one: THROUGHPUT's streams only pay off when fed concurrently); "one sync call" waits for
each batch before sending the next.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from automl.backbones import get_backbone
from automl.cache.engines import frozen_ir_folder, openvino_frozen
from automl.cache.extract import built_model, decode_file
from automl.data.dataset import scan_dataset
from automl.engines import openvino as ov_engine
from automl.machine import describe
from benchmarks import results as results_md
from benchmarks.extraction import cpu_seconds

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
LATENCY = {"PERFORMANCE_HINT": "LATENCY", **F32}
THROUGHPUT = {"PERFORMANCE_HINT": "THROUGHPUT", **F32}
SETTINGS: dict[str, tuple[dict[str, str], int, bool]] = {
    "LATENCY, batch 8, stream": (LATENCY, 8, True),
    "LATENCY, batch 16, stream": (LATENCY, 16, True),
    "LATENCY, batch 32, stream": (LATENCY, 32, True),
    "LATENCY, batch 64, stream": (LATENCY, 64, True),
    "LATENCY, batch 32, one sync call at a time": (LATENCY, 32, False),
    "LATENCY, 1 thread, batch 32, stream": ({**LATENCY, "INFERENCE_NUM_THREADS": "1"}, 32, True),
    "THROUGHPUT, batch 8, stream": (THROUGHPUT, 8, True),
    "THROUGHPUT, batch 32, stream": (THROUGHPUT, 32, True),
    "THROUGHPUT, batch 32, one sync call at a time": (THROUGHPUT, 32, False),
}


def runner(folder, config: dict[str, str], batch: int, streamed: bool):
    """A function that pushes all `pixels` through the IR compiled with `config`, `batch` images a call."""
    compiled = ov_engine.CompiledIR(folder, uint8_input=True, config=config)

    def run(pixels: np.ndarray) -> None:
        starts = range(0, len(pixels), batch)
        if streamed:
            for _ in compiled.stream(starts, lambda i: pixels[i : i + batch], ["all"], chunk=batch):
                pass
        else:
            for i in starts:
                compiled(pixels[i : i + batch], ["all"])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--dataset", default="data/natural_images")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    backbone = get_backbone(args.backbone)
    records = scan_dataset(args.dataset, train=0.7, val=0.15, test=0.15, seed=0).records[: args.images]
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in records])
    assert openvino_frozen(backbone, "default", ["all"], lambda: built_model(backbone, "default")) is not None
    folder = frozen_ir_folder(backbone, "default")
    runs = {name: runner(folder, *setting) for name, setting in SETTINGS.items()}
    for run in runs.values():
        run(pixels[:64])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runs}
    per_cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start, cpu = time.perf_counter(), cpu_seconds()
            run(pixels)
            rates[name].append(len(pixels) / (time.perf_counter() - start))
            per_cpu[name].append(len(pixels) / (cpu_seconds() - cpu))
    rows = [
        {
            "setting": name,
            "images/s (median)": f"{statistics.median(r):.1f}",
            "rounds": " / ".join(f"{x:.0f}" for x in r),
            "images per CPU-second (median)": f"{statistics.median(per_cpu[name]):.1f}",
        }
        for name, r in sorted(rates.items(), key=lambda item: -statistics.median(item[1]))
    ]
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    results = {
        "machine": describe(),
        "backbone": args.backbone,
        "images": len(pixels),
        "load_1min": load,
        "rates": rates,
        "per_cpu_second": per_cpu,
    }
    summary = (
        f"{args.backbone} frozen part (cut `all` taken), {len(pixels)} real photos (uint8 in memory), float32 "
        f"inference, {args.rounds} rounds round-robin; 1-minute load average at the end: {load} (other agents shared "
        "the 2 cores).\n\n" + results_md.table(rows)
    )
    results_md.publish("openvino_settings", "OpenVINO CPU settings for the frozen part", results, summary)


if __name__ == "__main__":
    main()
