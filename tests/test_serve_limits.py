"""Abusive clients against a real server on loopback: slow headers, too many connections, uploads that stop
halfway, photos too large to decode, formats that would run a program, bytes in flight. Each gets a bounded
answer and a normal client is still served."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_serve_app import LoopbackServer, assert_refused, post
from tiny_model import save_tiny_model

from automl.data.resize import Resize
from automl.exported import ExportedModel
from automl.serve.app import create_app
from automl.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    folder = save_tiny_model(tmp_path_factory.mktemp("run") / "model", ["cat", "dog", "fox"], Resize(64, 0.875))
    return ExportedModel.load(folder)


@pytest.fixture(scope="module")
def jpeg(animals10: Path) -> bytes:
    return (animals10 / "chicken" / "chicken (1).jpeg").read_bytes()


def png(width: int, height: int, mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30, 200)[: len(mode)]).save(buffer, format="PNG")
    return buffer.getvalue()


def open_slow_connection(base: str) -> socket.socket:
    """A connection that sends half a request line and then nothing (slowloris)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
    return sock


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_that_never_finish_their_headers_are_closed(model: ExportedModel, jpeg: bytes) -> None:
    settings = ServeSettings(header_timeout_s=1.0)
    with LoopbackServer(create_app(model, settings), settings) as base:
        slow = [open_slow_connection(base) for _ in range(20)]
        started = time.monotonic()
        assert post(base, content=jpeg).status_code == 200  # served meanwhile
        assert all(closed_by_server(sock, within_s=5) for sock in slow)
        assert time.monotonic() - started < 5
        with httpx.Client(base_url=base) as client:  # keep-alive: the next request's headers are timed too
            assert client.post("/v1/predict", content=jpeg).status_code == 200
            assert client.get("/healthz").status_code == 200
        for sock in slow:
            sock.close()


def test_beyond_the_connection_cap_the_slowest_connections_make_room(model: ExportedModel, jpeg: bytes) -> None:
    settings = ServeSettings(header_timeout_s=60.0, max_connections=10)
    with LoopbackServer(create_app(model, settings), settings) as base:
        slow = [open_slow_connection(base) for _ in range(30)]
        for _ in range(3):
            assert post(base, content=jpeg).status_code == 200  # each new client evicts the oldest slow one
        assert sum(closed_by_server(sock, within_s=0.5) for sock in slow) >= 20
        for sock in slow:
            sock.close()


def test_a_client_leaving_mid_upload_is_counted_499_not_500(
    model: ExportedModel, jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="automl.serve.upload")
    with LoopbackServer(create_app(model)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
            )
            sock.sendall(jpeg[:1000])
            time.sleep(0.3)
        time.sleep(0.5)
        metrics = httpx.get(f"{base}/metrics").text
        assert re.search(r'automl_http_requests_total\{route="/v1/predict",status="499"\} 1\.0', metrics), metrics
        assert 'status="500"' not in metrics  # an unhandled exception would have been counted 500
        assert post(base, content=jpeg).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "automl.serve.upload"]
    assert len(lines) == 1 and re.fullmatch(
        r"127\.0\.0\.1 disconnected during the upload \(1000 bytes received\)", lines[0]
    )


def test_a_photo_with_more_pixels_than_the_limit_is_refused_from_its_header(model: ExportedModel) -> None:
    settings = ServeSettings(max_pixels=1_000_000)
    with LoopbackServer(create_app(model, settings), settings) as base:
        assert_refused(
            post(base, content=png(1001, 1000)), 422, r"1001x1000 = 1,001,000 pixels, more than the limit of 1,000,000"
        )
        assert post(base, content=png(1000, 1000)).status_code == 200


def test_a_large_jpeg_passes_the_pixel_limit_because_it_is_decoded_scaled(model: ExportedModel) -> None:
    """4000x3000 = 12 MP declared, but DCT scaling decodes it at 1/8 for a 64 px input: 0.19 MP."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(buffer, "JPEG")
    settings = ServeSettings(max_pixels=1_000_000)
    with LoopbackServer(create_app(model, settings), settings) as base:
        assert post(base, content=buffer.getvalue()).status_code == 200


def test_postscript_is_never_decoded(model: ExportedModel) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    with LoopbackServer(create_app(model)) as base:
        response = post(base, content=eps, headers={"Content-Type": "image/jpeg"})
        assert_refused(response, 422, "not an image")
        assert "gs" not in response.json()["detail"].split()


def test_bodies_beyond_the_bytes_in_flight_get_503(model: ExportedModel, jpeg: bytes) -> None:
    settings = ServeSettings(max_upload_bytes_in_flight=len(jpeg) // 2)
    with LoopbackServer(create_app(model, settings), settings) as base:
        response = post(base, content=jpeg)
        assert_refused(response, 503, "upload bytes in flight would pass the limit")
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Connection"] == "close"  # decided from Content-Length: the body is never read
    settings = ServeSettings(max_upload_bytes_in_flight=len(jpeg) + 1)
    with LoopbackServer(create_app(model, settings), settings) as base:
        assert post(base, content=jpeg).status_code == 200
        assert post(base, content=jpeg).status_code == 200  # the first request's bytes were given back


def test_decode_threads_follow_the_cpus_this_process_may_use() -> None:
    import os

    assert 1 <= ServeSettings().decode_threads <= min(4, len(os.sched_getaffinity(0)))


def test_a_model_that_cannot_serve_never_starts(model: ExportedModel) -> None:
    from automl.errors import InputError
    from automl.serve.app import self_check

    class Broken:
        labels = model.labels
        resize = model.resize

        def predict_arrays(self, images: np.ndarray) -> np.ndarray:
            return np.full((len(images), len(self.labels)), np.nan, dtype=np.float32)

    assert "decoded and predicted" in self_check(model, ServeSettings().max_pixels)
    with pytest.raises(InputError, match="the model cannot serve"):
        self_check(Broken(), ServeSettings().max_pixels)


def test_the_pixel_budget_lets_small_decodes_pass_a_waiting_large_one() -> None:
    from automl.serve.limits import PixelBudget

    async def scenario() -> list[str]:
        budget, order = PixelBudget(100), []

        async def decode(name: str, pixels: int, hold_s: float) -> None:
            async with budget.holding(pixels):
                order.append(name)
                await asyncio.sleep(hold_s)

        await asyncio.gather(decode("large-1", 90, 0.2), decode("large-2", 90, 0.0), decode("small", 5, 0.0))
        return order

    assert asyncio.run(scenario()) == ["large-1", "small", "large-2"]
