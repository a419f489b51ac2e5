"""The HTTP API: upload a photo, get labels with scores, the same JSON `automl predict --json` prints.

Per request, the photo is read with its limits enforced (`upload.py`), decoded in a thread pool (Pillow
releases the GIL, and the event loop must stay free to accept other clients), then joins a micro-batch
(`batching.py`) so that concurrent requests share one model call. Requests, body bytes and decoding
pixels in flight are bounded (`limits.py`, `settings.py`): beyond them a client gets 503 with Retry-After.
Before accepting a connection the server decodes and predicts a real photo through the same path a
request takes (`self_check`): a model that cannot serve never starts, and /healthz reports that check.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from automl.data.images import ImageError, decode_image, decoded_pixels
from automl.data.resize import Resize
from automl.errors import InputError
from automl.exported import top_labels
from automl.serve.batching import MicroBatcher
from automl.serve.limits import Budget, PixelBudget
from automl.serve.metrics import MetricsMiddleware, ServerMetrics
from automl.serve.settings import ServeSettings
from automl.serve.upload import UPLOAD_FIELD, receive_upload

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)
"""Both ways to send the API key; declared as security schemes so that /docs offers an Authorize button."""


class Classifier(Protocol):
    """What the server needs from a model (`automl.exported.ExportedModel` is one)."""

    @property
    def labels(self) -> list[str]: ...

    @property
    def resize(self) -> Resize: ...

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, size, size, 3) → class probabilities (N, len(labels))."""
        ...


class LabelScore(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    """One photo's result, shaped like an entry of `automl predict --json` (`file`: the upload's name)."""

    file: str | None
    labels: list[LabelScore]


class Labels(BaseModel):
    labels: list[str]


class Health(BaseModel):
    status: str
    labels: int
    input_size: int
    self_check: str
    """What was proven before the server accepted connections: a real photo decoded and predicted."""


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A photo (JPEG, PNG, WebP, GIF, BMP, TIFF...), as a multipart field or as the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                    "required": [UPLOAD_FIELD],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERROR_RESPONSES = {
    400: {"description": "Malformed multipart body."},
    401: {"description": "Missing or wrong API key (when the server has one)."},
    408: {"description": "The upload was too slow."},
    413: {"description": "The upload is larger than the server's limit."},
    415: {"description": "The declared media type is not an image."},
    422: {"description": "No photo sent, or the bytes are not a decodable image; `detail` says why."},
    503: {"description": "At a limit (requests, bytes or pixels in flight); retry after `Retry-After` seconds."},
}


def self_check(model: Classifier, max_pixels: int) -> str:
    """Encode a photo, decode it as a request would and predict it; raise InputError naming what fails.

    Also traces the model's graph (seconds), so that no client waits for it.
    """
    from PIL import Image

    side = 2 * model.resize.size
    gradient = np.linspace(0, 255, side, dtype=np.uint8)
    photo = np.stack(
        [np.tile(gradient, (side, 1)), np.tile(gradient[:, None], (1, side)), np.full((side, side), 128)], -1
    )
    buffer = io.BytesIO()
    Image.fromarray(photo.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    try:
        pixels = decode_image(buffer.getvalue(), model.resize, max_pixels=max_pixels)
        scores = np.asarray(model.predict_arrays(pixels[None]))
    except Exception as exc:
        raise InputError(
            f"the model cannot serve: decoding and predicting a test photo failed ({type(exc).__name__}: {exc})",
            hint="check the model's automl.json (resize) and model.keras; `automl predict` on a photo shows the same",
        ) from exc
    labels = len(model.labels)
    if scores.shape != (1, labels) or not np.all(np.isfinite(scores)):
        raise InputError(
            f"the model cannot serve: a test photo gave scores of shape {scores.shape}, expected (1, {labels})"
        )
    return f"a {side}x{side} JPEG decoded and predicted at start"


def create_app(model: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving `model`; the micro-batcher and decode threads live as long as the app runs."""
    settings = settings or ServeSettings()
    labels = list(model.labels)
    metrics = ServerMetrics()
    batcher = MicroBatcher(
        model.predict_arrays,
        max_batch=settings.max_batch,
        window_s=settings.batch_window_ms / 1000,
        observer=metrics.record_batch,
    )
    decoders = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
    requests_in_flight = Budget(settings.max_in_flight, "requests in flight")
    bytes_in_flight = Budget(settings.max_upload_bytes_in_flight, "upload bytes in flight")
    pixels_decoding = PixelBudget(settings.decode_pixel_budget)
    checked = ""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal checked
        checked = await asyncio.to_thread(self_check, model, settings.max_pixels)  # before accepting connections
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="automl image classifier",
        summary=f"Labels a photo with one of {len(labels)} classes.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(
        MetricsMiddleware,
        metrics=metrics,
        routes=frozenset({"/v1/predict", "/v1/labels", "/healthz", "/metrics", "/docs", "/openapi.json"}),
    )
    require_key = _api_key_dependency(settings.api_key)

    @app.post(
        "/v1/predict",
        dependencies=[Depends(require_key)],
        openapi_extra=PREDICT_BODY,
        responses=ERROR_RESPONSES,  # type: ignore[arg-type]
    )
    async def predict(
        request: Request,
        top: Annotated[int, Query(ge=1, description="How many labels to return, best first.")] = 5,
    ) -> Prediction:
        """Label one photo; send it as the multipart field `file` or as the raw request body."""
        with requests_in_flight.holding(1):  # 503 with Retry-After beyond max_in_flight
            async with receive_upload(
                request,
                max_bytes=settings.max_body_bytes,
                timeout_s=settings.upload_timeout_s,
                in_flight=bytes_in_flight,
            ) as upload:
                pixels = await decode(upload.data)
            probabilities = await batcher.predict(pixels)
        return Prediction(
            file=upload.filename, labels=[LabelScore(**item) for item in top_labels(probabilities, labels, top)]
        )

    async def decode(data: bytes | bytearray) -> np.ndarray:
        """The photo's pixels for the model, decoded in a thread once its pixels fit the decoding budget."""
        loop = asyncio.get_running_loop()
        try:
            # header only: a photo over the limit is refused before a pixel is decoded
            cost = await loop.run_in_executor(
                decoders, lambda: decoded_pixels(data, model.resize, max_pixels=settings.max_pixels)
            )
            async with pixels_decoding.holding(cost):
                return await loop.run_in_executor(
                    decoders, lambda: decode_image(data, model.resize, max_pixels=settings.max_pixels)
                )
        except ImageError as exc:
            raise HTTPException(422, f"cannot decode the upload as an image: {exc.reason}") from None

    @app.get("/v1/labels", dependencies=[Depends(require_key)])
    async def list_labels() -> Labels:
        """The class labels, in the model's output order."""
        return Labels(labels=labels)

    @app.get("/healthz")
    async def health() -> Health:
        """Liveness and readiness: a real photo was decoded and predicted before the server accepted connections,
        and the micro-batcher still runs (503 otherwise)."""
        if not batcher.running:
            raise HTTPException(503, "the micro-batcher has stopped: restart the server")
        return Health(status="ok", labels=len(labels), input_size=model.resize.size, self_check=checked)

    @app.get("/metrics", dependencies=[Depends(require_key)], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format: requests by status, latency, batch sizes, process memory."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _api_key_dependency(api_key: str | None) -> Callable[..., Awaitable[None]]:
    """A dependency accepting the key as `X-API-Key: KEY` or `Authorization: Bearer KEY`; no key: open."""

    async def require_key(
        header_key: Annotated[str | None, Security(KEY_HEADER)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        if api_key is None:
            return
        offered = header_key or (credentials.credentials if credentials else None)
        if offered is None or not secrets.compare_digest(offered.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_key
