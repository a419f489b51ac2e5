"""The HTTP API with a real uvicorn server on loopback, a real (small) Keras model and real photos.

Each bad request must get the right status code and a `detail` saying what is wrong; good photos must
get exactly what `automl predict --json` says about the same file.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tiny_model import save_tiny_model

from automl.data.resize import Resize
from automl.exported import ExportedModel
from automl.serve.app import create_app
from automl.serve.settings import ServeSettings

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, animals10: Path) -> Path:
    """A tiny but real conv net with the animals10 labels, exported like a search exports its best model."""
    labels = sorted(p.name for p in animals10.iterdir() if p.is_dir())
    return save_tiny_model(tmp_path_factory.mktemp("run") / "model", labels, Resize(64, 0.875, "bicubic"))


@pytest.fixture(scope="module")
def model(model_dir: Path) -> ExportedModel:
    return ExportedModel.load(model_dir)


class LoopbackServer:
    """uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: object, settings: ServeSettings | None = None) -> None:
        import uvicorn

        from automl.serve.connections import guarded_h11

        settings = settings or ServeSettings()
        protocol = guarded_h11(settings.header_timeout_s, settings.max_connections)  # as `automl serve` runs it
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http=protocol)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(model: ExportedModel) -> Iterator[str]:
    settings = ServeSettings(batch_window_ms=50)
    with LoopbackServer(create_app(model, settings)) as base:
        yield base


@pytest.fixture(scope="module")
def jpeg(animals10: Path) -> Path:
    return animals10 / "chicken" / "chicken (1).jpeg"


@pytest.fixture(scope="module")
def rgba_png(animals10: Path) -> Path:
    return animals10 / "bear" / "bear (1).png"


def post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", timeout=30, **kwargs)  # type: ignore[arg-type]


def assert_refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert re.search(reason, detail, re.IGNORECASE), detail


def assert_matches_automl_predict(got: list[dict], model: ExportedModel, photo: Path, top: int = 5) -> None:
    """The server's labels are `automl predict`'s top labels for the same file, with the same scores.

    Compared as scores per label, not as an ordered list: a different batch can move a score by ~1e-7,
    which may swap two nearly tied labels of this untrained model.
    """
    reference = {item["label"]: item["score"] for item in model.predict_files([photo], top=100).results[0]["labels"]}
    assert len(got) == top
    scores = [item["score"] for item in got]
    assert scores == sorted(scores, reverse=True)
    for item in got:
        assert item["score"] == pytest.approx(reference[item["label"]], abs=1e-5)
    left_out = [score for label, score in reference.items() if label not in {item["label"] for item in got}]
    assert all(score <= min(scores) + 1e-5 for score in left_out)


def test_a_real_jpeg_gets_the_same_labels_as_automl_predict(url: str, model: ExportedModel, jpeg: Path) -> None:
    response = post(url, files={"file": (jpeg.name, jpeg.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == jpeg.name
    assert_matches_automl_predict(body["labels"], model, jpeg)


def test_a_raw_body_with_top_3(url: str, model: ExportedModel, jpeg: Path) -> None:
    response = post(url, content=jpeg.read_bytes(), params={"top": 3}, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.json()["file"] is None
    assert_matches_automl_predict(response.json()["labels"], model, jpeg, top=3)


def test_top_beyond_the_labels_gives_every_label_and_top_0_is_refused(url: str, jpeg: Path) -> None:
    every = post(url, content=jpeg.read_bytes(), params={"top": 50})
    assert every.status_code == 200
    assert len(every.json()["labels"]) == 10
    assert post(url, content=jpeg.read_bytes(), params={"top": 0}).status_code == 422


def test_png_with_alpha(url: str, model: ExportedModel, rgba_png: Path, tmp_path: Path) -> None:
    photo = Image.open(rgba_png).convert("RGBA")
    pixels = np.asarray(photo).copy()
    pixels[:, : pixels.shape[1] // 2, 3] = 0  # left half fully transparent: composited on white
    see_through = tmp_path / "half transparent.png"
    Image.fromarray(pixels, "RGBA").save(see_through)
    for path in (rgba_png, see_through):
        response = post(url, files={"file": (path.name, path.read_bytes(), "image/png")})
        assert response.status_code == 200, response.text
        assert_matches_automl_predict(response.json()["labels"], model, path)


def test_empty_body_is_422(url: str) -> None:
    assert_refused(post(url, content=b""), 422, r"empty upload \(0 bytes\)")
    assert_refused(post(url, files={"file": ("empty.jpg", b"", "image/jpeg")}), 422, "empty upload")


def test_missing_file_field_is_422_naming_the_field(url: str, jpeg: Path) -> None:
    response = post(url, files={"photo": (jpeg.name, jpeg.read_bytes(), "image/jpeg")})
    assert_refused(response, 422, r"field 'file'.*missing.*photo")


def test_text_file_is_refused_with_a_reason(url: str) -> None:
    text = b"name,label\ncat (1).png,cat\n" * 20
    assert_refused(
        post(url, files={"file": ("labels.csv", text, "text/csv")}), 415, "unsupported media type 'text/csv'"
    )
    undeclared = post(url, content=text, headers={"Content-Type": "application/octet-stream"})
    assert_refused(undeclared, 422, "not an image: the file holds text")


def test_truncated_jpeg_is_422(url: str, jpeg: Path) -> None:
    data = jpeg.read_bytes()
    assert_refused(post(url, content=data[: len(data) // 2]), 422, "truncated")


def test_30_mb_body_is_413_by_declared_length_and_by_streamed_count(url: str) -> None:
    body = b"\xff" * (30 * 1024 * 1024)
    assert_refused(post(url, content=body), 413, r"declares 31,457,280 bytes; the limit is 20,971,520")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server must count
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    assert_refused(post(url, content=chunked()), 413, "passed 20,971,520 bytes while streaming")


def test_malformed_multipart_is_400(url: str) -> None:
    response = post(url, content=b"--x\r\nno headers", headers={"Content-Type": "multipart/form-data"})
    assert_refused(response, 400, "malformed multipart")


def test_16_parallel_requests_are_answered_and_batched(url: str, model: ExportedModel, animals10: Path) -> None:
    photos = sorted((animals10 / "cat").iterdir())[:16]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/predict", content=p.read_bytes()) for p in photos))

    before = batch_histogram(url)
    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 16
    for photo, response in zip(photos, responses, strict=True):
        assert_matches_automl_predict(response.json()["labels"], model, photo)
    after = batch_histogram(url)
    calls = after["count"] - before["count"]
    assert after["sum"] - before["sum"] == 16
    assert calls < 16, "16 concurrent requests should share model calls"


def batch_histogram(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        part: float(re.search(rf"^automl_batch_size_{part} (\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
        for part in ("count", "sum")
    }


def test_metrics_count_requests_by_status_and_show_memory(url: str) -> None:
    post(url, content=b"")
    text = httpx.get(f"{url}/metrics").text
    assert re.search(r'^automl_http_requests_total\{route="/v1/predict",status="422"\} [1-9]', text, re.MULTILINE)
    assert re.search(r"^automl_http_request_duration_seconds_bucket\{le=\"0.005\",route=\"/v1/predict\"\}", text, re.M)
    assert re.search(r"^process_resident_memory_bytes [1-9]", text, re.MULTILINE)


def test_labels_health_and_docs(url: str, model: ExportedModel) -> None:
    assert httpx.get(f"{url}/v1/labels").json() == {"labels": model.labels}
    health = httpx.get(f"{url}/healthz").json()
    assert {k: health[k] for k in ("status", "labels", "input_size")} == {
        "status": "ok",
        "labels": 10,
        "input_size": 64,
    }
    assert "decoded and predicted" in health["self_check"]
    assert httpx.get(f"{url}/docs").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]


def test_api_key_is_required_when_set(model: ExportedModel, jpeg: Path) -> None:
    photo = jpeg.read_bytes()
    with LoopbackServer(create_app(model, ServeSettings(api_key=API_KEY))) as keyed:
        assert_refused(post(keyed, content=photo), 401, "missing or wrong API key")
        assert_refused(post(keyed, content=photo, headers={"X-API-Key": "wrong"}), 401, "X-API-Key")
        assert post(keyed, content=photo, headers={"X-API-Key": API_KEY}).status_code == 200
        assert post(keyed, content=photo, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert httpx.get(f"{keyed}/v1/labels").status_code == 401
        assert httpx.get(f"{keyed}/metrics").status_code == 401
        assert httpx.get(f"{keyed}/healthz").status_code == 200  # probes need no key


async def upload_in_pieces(
    url: str, photo: bytes, *, pieces: int, before_last: asyncio.Event | None = None, pause_s: float = 0.05
) -> httpx.Response:
    """POST `photo` as a chunked body, pausing between pieces; optionally hold the last piece until an event."""

    async def trickle() -> AsyncIterator[bytes]:
        step = -(-len(photo) // pieces)
        for start in range(0, len(photo), step):
            if start + step >= len(photo) and before_last is not None:
                await asyncio.wait_for(before_last.wait(), 60)
            elif start:
                await asyncio.sleep(pause_s)
            yield photo[start : start + step]

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await client.post("/v1/predict", content=trickle())


def test_a_slow_client_does_not_block_others(url: str, jpeg: Path) -> None:
    """The slow upload stays open until 8 other requests are answered: a blocked server would never answer them."""
    photo = jpeg.read_bytes()

    async def scenario() -> tuple[httpx.Response, list[int]]:
        others_answered = asyncio.Event()
        slow = asyncio.create_task(upload_in_pieces(url, photo, pieces=10, before_last=others_answered))
        await asyncio.sleep(0.3)  # the slow upload is under way
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            statuses = [(await client.post("/v1/predict", content=photo)).status_code for _ in range(8)]
        assert not slow.done(), "the slow upload should still be open"
        others_answered.set()
        return await slow, statuses

    slow, statuses = asyncio.run(scenario())
    assert statuses == [200] * 8
    assert slow.status_code == 200, slow.text


def test_a_stalled_upload_gets_408_and_frees_the_server(model: ExportedModel, jpeg: Path) -> None:
    photo = jpeg.read_bytes()
    with LoopbackServer(create_app(model, ServeSettings(upload_timeout_s=1.0))) as base:
        stalled = asyncio.run(upload_in_pieces(base, photo, pieces=2, pause_s=1.5))
        assert_refused(stalled, 408, r"took longer than 1 s; send the photo faster")
        assert post(base, content=photo).status_code == 200


def test_a_burst_beyond_the_requests_in_flight_gets_503_with_retry_after(url: str, animals10: Path) -> None:
    """200 at once against 64 in flight: every request is answered at once, 200 or 503 with Retry-After (no
    queue grows), and each refused one succeeds when retried as told."""
    photos = [p.read_bytes() for p in sorted((animals10 / "dog").iterdir())[:20]]

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            first = await asyncio.gather(*(client.post("/v1/predict", content=photos[i % 20]) for i in range(200)))
            refused = [i for i, r in enumerate(first) if r.status_code == 503]
            await asyncio.sleep(max([int(first[i].headers["Retry-After"]) for i in refused], default=0))
            retried = [await client.post("/v1/predict", content=photos[i % 20]) for i in refused]
            return first, retried

    first, retried = asyncio.run(burst())
    statuses = [r.status_code for r in first]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= ServeSettings().max_in_flight
    for response in first:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"
            assert "requests in flight" in response.json()["detail"]
    assert all(r.status_code == 200 and len(r.json()["labels"]) == 5 for r in retried)


@pytest.mark.timeout(120)  # a server that never prints its address must not hang the suite
def test_cli_serves_on_loopback_by_default(model_dir: Path, jpeg: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "automl", "serve", str(model_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address = None
        assert process.stdout is not None
        for line in process.stdout:
            if match := re.search(r"Uvicorn running on http://([\d.]+):(\d+)", line):
                address = match.groups()
                break
        assert address is not None, "the server never said where it listens"
        assert address[0] == "127.0.0.1"
        response = post(f"http://127.0.0.1:{address[1]}", content=jpeg.read_bytes())
        assert response.status_code == 200, response.text
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_cli_refuses_a_missing_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "automl", "serve", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no such run folder" in result.stderr


def test_a_raw_body_of_a_declared_non_image_type_is_refused_before_it_is_sent(url: str) -> None:
    """Headers promise 1 MB of text/plain, then the client sends nothing: the 415 must come without the body."""
    import socket

    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=5) as client:
        client.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1048576\r\n\r\nhello"
        )
        answer = ""
        while "unsupported" not in answer:  # a server waiting for the body lets recv time out: the test fails
            received = client.recv(65536)
            if not received:
                break
            answer += received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 415"), answer[:200]
    assert "unsupported media type 'text/plain'" in answer


def test_the_model_graph_is_traced_before_the_server_accepts_requests(model_dir: Path, jpeg: Path) -> None:
    """Tracing a backbone takes seconds: the server does it at start-up, once for every batch size."""
    fresh = ExportedModel.load(model_dir)
    assert fresh._forward.experimental_get_tracing_count() == 0
    with LoopbackServer(create_app(fresh)) as base:
        assert fresh._forward.experimental_get_tracing_count() == 1, "no request should pay for the trace"
        assert post(base, content=jpeg.read_bytes()).status_code == 200
    assert fresh._forward.experimental_get_tracing_count() == 1
