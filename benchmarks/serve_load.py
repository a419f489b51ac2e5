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

Then an abuse phase (`--abuse-seconds`, 0 to skip): while one normal client sends photos, 2 clients send
PNGs at the decoded-pixel limit (4000x4000 RGBA = 16 MP), 100 clients upload 10 MB at once, again and
again, and 150 connections dribble request headers that never end. Checks that the server's resident
memory (sampled from /proc every 0.1 s) stays under `ABUSE_MEMORY_BOUND` and the normal client's p99
under 1 s.
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
ABUSE_MEMORY_BOUND = 1.5 * 2**30
"""Resident memory the server must stay under while abused (RELIABILITY.md derives it from the limits)."""
LARGE_CLIENTS, UPLOAD_CLIENTS, SLOW_CONNECTIONS, UPLOAD_BYTES = 2, 100, 150, 10 * 2**20


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


def near_limit_png(side: int = 4000) -> bytes:
    """A 16 MP RGBA PNG (the server's default decoded-pixel limit) that compresses to ~100 KB on the wire."""
    import io

    from PIL import Image

    pixels = np.zeros((side, side, 4), dtype=np.uint8)
    pixels[..., 0] = np.arange(side, dtype=np.uint32)[:, None] % 256
    pixels[..., 3] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


async def slow_headers(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """One slowloris connection at a time: half a request, then a header byte a second; reopened when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened[0] += 1
            writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set() and not reader.at_eof():
                await writer.drain()
                writer.write(b"X")
                try:
                    await asyncio.wait_for(reader.read(1), 1.0)
                except TimeoutError:
                    continue
            writer.close()
        except OSError:
            await asyncio.sleep(0.2)


async def run_abuse(url: str, pid: int, photos: list[bytes], seconds: float) -> dict[str, object]:
    """The abuse phase: normal client latencies, abusers' status codes, the server's peak resident memory."""
    port = int(url.rsplit(":", 1)[1])
    stop = asyncio.Event()
    large, garbage = near_limit_png(), np.random.default_rng(0).bytes(UPLOAD_BYTES)
    statuses: dict[str, dict[str, int]] = {"large": {}, "upload": {}, "normal": {}}
    latencies: list[float] = []
    peak = [0]
    opened = [0]

    def count(kind: str, status: str) -> None:
        statuses[kind][status] = statuses[kind].get(status, 0) + 1

    async def sample_memory() -> None:
        while not stop.is_set():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            await asyncio.sleep(0.1)

    async def abuser(client: httpx.AsyncClient, kind: str, body: bytes) -> None:
        while not stop.is_set():
            try:
                response = await client.post("/v1/predict", content=body, headers={"Content-Type": "image/png"})
                count(kind, str(response.status_code))
            except httpx.HTTPError as exc:
                count(kind, type(exc).__name__)

    async def normal(client: httpx.AsyncClient) -> None:
        index = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await client.post("/v1/predict", content=photos[index % len(photos)])
                count("normal", str(response.status_code))
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                count("normal", type(exc).__name__)
            index += 1
            await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=UPLOAD_CLIENTS + LARGE_CLIENTS)
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as crowd,
        httpx.AsyncClient(base_url=url, timeout=60) as single,
    ):
        tasks = [asyncio.create_task(sample_memory())]
        tasks += [asyncio.create_task(slow_headers(port, stop, opened)) for _ in range(SLOW_CONNECTIONS)]
        tasks += [asyncio.create_task(abuser(crowd, "large", large)) for _ in range(LARGE_CLIENTS)]
        tasks += [asyncio.create_task(abuser(crowd, "upload", garbage)) for _ in range(UPLOAD_CLIENTS)]
        tasks.append(asyncio.create_task(normal(single)))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait(tasks, timeout=60)
        rss_after = server_gauges(url)["rss"]
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "seconds": seconds,
        "normal_requests": len(latencies),
        "normal_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "normal_p99_ms": round(float(np.percentile(ms, 99)), 1),
        "statuses": statuses,
        "slow_connections_opened": opened[0],
        "peak_rss_mb": round(peak[0] / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "large_png_bytes": len(large),
    }


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
    parser.add_argument("--abuse-seconds", type=float, default=30.0, help="Duration of the abuse phase (0: skip).")
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
            abuse = asyncio.run(run_abuse(url, server.pid, photos, args.abuse_seconds)) if args.abuse_seconds else None
        finally:
            server.terminate()
            server.wait(timeout=30)

    checks = verdicts(phases, rss_start, rss_end)
    if abuse is not None:
        checks["abused: peak memory < 1.5 GB"] = abuse["peak_rss_mb"] * 2**20 < ABUSE_MEMORY_BOUND
        checks["abused: normal client p99 < 1 s"] = abuse["normal_p99_ms"] < 1000
    model_name = str(args.model) if args.model else f"{args.backbone} ({args.weights} weights) + softmax head"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe(),
        "model": model_name,
        "photos": len(photos),
        "phases": [asdict(phase) for phase in phases.values()],
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "abuse": abuse,
        "checks": checks,
    }
    body = "\n\n".join(
        [
            f"`automl serve` of {model_name}; {len(photos)} real photos from {args.dataset} cycled by closed-loop "
            "clients on loopback (the load generator shares the machine's cores with the server).",
            results_md.table([asdict(phase) for phase in phases.values()]),
            f"Server resident memory: {result['rss_start_mb']} MB after warm-up, {result['rss_end_mb']} MB at the end.",
            abuse_text(abuse),
            results_md.verdicts(checks),
        ]
    )
    results_md.publish("serve_load", "HTTP API under load (automl serve)", result, body)
    sys.exit(0 if all(checks.values()) else 1)


def abuse_text(abuse: dict | None) -> str:
    if abuse is None:
        return "Abuse phase skipped (--abuse-seconds 0)."
    return (
        f"Abuse phase ({abuse['seconds']:g} s, default limits): {LARGE_CLIENTS} clients sending a 4000x4000 RGBA PNG "
        f"({abuse['large_png_bytes']:,} bytes, 16 MP decoded) in a loop, {UPLOAD_CLIENTS} clients uploading 10 MB "
        f"of noise in a loop, {SLOW_CONNECTIONS} connections dribbling headers ({abuse['slow_connections_opened']} "
        f"opened in all), and one normal client. Normal client: {abuse['normal_requests']} photos answered, p50 "
        f"{abuse['normal_p50_ms']} ms, p99 {abuse['normal_p99_ms']} ms. Server peak resident memory "
        f"{abuse['peak_rss_mb']} MB, {abuse['rss_after_mb']} MB after. Status codes: {abuse['statuses']}."
    )


if __name__ == "__main__":
    main()
