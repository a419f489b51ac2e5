"""Load on the HTTP API: real photos from concurrent clients on loopback, against a real `automl serve` process.

    python -m benchmarks.serve_load [--model RUN_DIR] [--backbone efficientnet_lite0] [--seconds 60]

Without `--model`, exports the backbone (its default pretrained weights) with an untrained softmax head
over the dataset's classes: serving cost does not depend on how well the head was trained. Then starts
`automl serve` as its own process, warms it up, and runs 1 client, then 16 clients, each for `--seconds`
(and at most `--max-requests`): requests/s, p50/p99 latency, errors, the server's mean batch size, and
its resident memory (from its own /metrics) after warm-up and at the end. Checks the serving issue's
targets (zero errors, p99 < 1 s at 16 clients, 16 clients >= 2x the throughput of 1, memory growth
<= 10 %), writes benchmarks/out/serve_load.json and its section of benchmarks/RESULTS.md, and exits 1
if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from automl.machine import describe
from benchmarks import results as results_md

CLIENTS = (1, 16)


@dataclass
class Phase:
    clients: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float


def export_stand_in(backbone_name: str, weights: str, labels: list[str], folder: Path) -> Path:
    """The backbone plus an untrained softmax head, exported exactly as a search exports its best model."""
    import keras

    from automl.backbones.registry import get_backbone
    from automl.exported import ExportedModel

    backbone = get_backbone(backbone_name)
    features = backbone.build(weights)
    outputs = keras.layers.Dense(len(labels), activation="softmax", name="head")(features.output)
    model = keras.Model(features.input, outputs)
    return ExportedModel.save(folder / "model", model, labels, backbone.resize, {"backbone": backbone_name})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "automl", "serve", str(model), "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sys.stderr)


def wait_until_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"automl serve exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"automl serve did not answer /healthz within {timeout_s:g} s")


def server_gauges(url: str) -> dict[str, float]:
    """Resident memory and the batch-size histogram's count and sum, read from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match is None:
            raise SystemExit(f"/metrics has no {name}")
        return float(match.group(1))

    return {
        "rss": value("process_resident_memory_bytes"),
        "batches": value("automl_batch_size_count"),
        "images": value("automl_batch_size_sum"),
    }


async def run_clients(url: str, photos: list[bytes], clients: int, seconds: float, max_requests: int) -> Phase:
    """`clients` loops, each sending one photo after another until the time or request budget is spent."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal errors
        index = offset
        while time.monotonic() < deadline and len(latencies) + errors < max_requests:
            started = time.perf_counter()
            try:
                response = await client.post("/v1/predict", content=photos[index % len(photos)])
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
            index += clients

    before = server_gauges(url)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(clients)))
    elapsed = time.monotonic() - started
    after = server_gauges(url)
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return Phase(
        clients=clients,
        seconds=round(elapsed, 1),
        requests=len(latencies) + errors,
        errors=errors,
        requests_per_s=round(len(latencies) / elapsed, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        mean_batch=round((after["images"] - before["images"]) / max(after["batches"] - before["batches"], 1), 1),
    )


def verdicts(phases: dict[int, Phase], rss_start: float, rss_end: float) -> dict[str, bool]:
    single, loaded = phases[1], phases[16]
    return {
        "zero errors": single.errors == 0 and loaded.errors == 0,
        "p99 < 1 s at 16 clients": loaded.p99_ms < 1000,
        "throughput(16) >= 2 x throughput(1)": loaded.requests_per_s >= 2 * single.requests_per_s,
        "memory growth <= 10 %": rss_end <= 1.10 * rss_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="Run folder or .keras to serve (default: export a stand-in).")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="Stand-in backbone (without --model).")
    parser.add_argument("--weights", default="default", help="Stand-in weights: default, imagenet, none.")
    parser.add_argument("--dataset", type=Path, default=Path("data/animals10"), help="Folder of class folders.")
    parser.add_argument("--photos", type=int, default=200, help="How many photos the clients cycle through.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Duration of each phase.")
    parser.add_argument("--max-requests", type=int, default=50_000, help="Request cap of each phase.")
    args = parser.parse_args()

    labels = sorted(p.name for p in args.dataset.iterdir() if p.is_dir())
    files = sorted(f for label in labels for f in (args.dataset / label).iterdir() if f.is_file())
    photos = [f.read_bytes() for f in files[:: max(1, len(files) // args.photos)][: args.photos]]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        model = args.model or export_stand_in(args.backbone, args.weights, labels, Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(model, port)
        try:
            wait_until_healthy(url, server)
            for clients in (16, 1):  # warm-up: trace the model for the batch sizes the phases will use
                asyncio.run(run_clients(url, photos, clients, seconds=5, max_requests=args.max_requests))
            rss_start = server_gauges(url)["rss"]
            phases = {
                clients: asyncio.run(run_clients(url, photos, clients, args.seconds, args.max_requests))
                for clients in CLIENTS
            }
            rss_end = server_gauges(url)["rss"]
        finally:
            server.terminate()
            server.wait(timeout=30)

    checks = verdicts(phases, rss_start, rss_end)
    model_name = str(args.model) if args.model else f"{args.backbone} ({args.weights} weights) + softmax head"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe(),
        "model": model_name,
        "photos": len(photos),
        "phases": [asdict(phase) for phase in phases.values()],
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "checks": checks,
    }
    body = "\n\n".join(
        [
            f"`automl serve` of {model_name}; {len(photos)} real photos from {args.dataset} cycled by closed-loop "
            "clients on loopback (the load generator shares the machine's cores with the server).",
            results_md.table([asdict(phase) for phase in phases.values()]),
            f"Server resident memory: {result['rss_start_mb']} MB after warm-up, {result['rss_end_mb']} MB at the end.",
            results_md.verdicts(checks),
        ]
    )
    results_md.publish("serve_load", "HTTP API under load (automl serve)", result, body)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
