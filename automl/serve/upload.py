"""Read the uploaded photo's bytes from a request, refusing oversized, stalled and malformed uploads early.

Two ways to send a photo: a multipart form with the field `file` (HTML forms, `curl -F file=@cat.jpg`),
or the raw bytes as the body (`curl --data-binary @cat.jpg`). The size limit is checked twice: against
the declared Content-Length before anything is read, and by counting bytes as they stream in, because
a chunked body declares no length and a client may lie about it. Every byte held counts against the
server's bytes-in-flight budget (`limits.Budget`, 503 beyond it) until the request is done with them.
A client that goes away mid-upload is logged in one line and answered (to no one) with 499, nginx's
"client closed request", so that /metrics never counts it as a server error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from automl.serve.limits import Budget

CLIENT_CLOSED = 499
log = logging.getLogger(__name__)

UPLOAD_FIELD = "file"
ACCEPTED_MEDIA_TYPES = ("image/", "application/octet-stream", "application/x-www-form-urlencoded")
"""Declared types an image may arrive with; urlencoded is what `curl --data-binary` declares by default.
Any other declared type (text/plain, application/json, ...) is refused with 415 before decoding."""


@dataclass(frozen=True)
class Upload:
    """The photo's bytes and, for a multipart upload, the file name the client gave."""

    data: bytes | bytearray
    filename: str | None


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request, *, max_bytes: int, timeout_s: float, in_flight: Budget
) -> AsyncIterator[Upload]:
    """The photo, held (and counted in `in_flight`) until the block ends; or an HTTPException (400, 408, 413,
    415, 422, 499, 503) saying what is wrong and what to do."""
    held = _Held(in_flight)
    try:
        yield await _read_upload(request, max_bytes, timeout_s, held)
    finally:
        held.release()


class _Held:
    """Bytes this request holds in the server's budget: its declared length up front (refused before a byte
    is read when it does not fit), then whatever a chunked or lying body streams beyond it."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.bytes = 0
        self.received = 0

    def reserve(self, declared: int) -> None:
        self.budget.take(declared, close=True)
        self.bytes = declared

    def take(self, amount: int) -> None:
        self.received += amount
        if self.received > self.bytes:
            self.budget.take(self.received - self.bytes)
            self.bytes = self.received

    def release(self) -> None:
        self.budget.give_back(self.bytes)
        self.bytes = 0


async def _read_upload(request: Request, max_bytes: int, timeout_s: float, held: _Held) -> Upload:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > max_bytes:
            raise _too_large(f"the request declares {int(declared):,} bytes", max_bytes)
        held.reserve(int(declared))
    content_type = request.headers.get("content-type", "")
    try:
        async with asyncio.timeout(timeout_s):
            if content_type.startswith("multipart/form-data"):
                upload, part_type = await _read_multipart(request, max_bytes, held)
                _check_media_type(part_type)  # a part's type is known only once the form is parsed
            else:
                _check_media_type(content_type)  # refused before a byte of the body is read
                body = bytearray()  # grown in place: no list of chunks joined into a second copy
                async for chunk in _bounded(request, max_bytes, held):
                    body += chunk
                upload = Upload(body, None)
    except TimeoutError:
        raise HTTPException(408, f"the upload took longer than {timeout_s:g} s; send the photo faster") from None
    except ClientDisconnect:
        client = request.client
        log.info(
            "%s disconnected during the upload (%d bytes received)",
            client.host if client else "a client",
            held.received,
        )
        raise HTTPException(CLIENT_CLOSED, "client disconnected during the upload") from None
    if not upload.data:
        raise HTTPException(
            422, f"empty upload (0 bytes): send a photo as the multipart field '{UPLOAD_FIELD}' or as the raw body"
        )
    return upload


async def _bounded(request: Request, max_bytes: int, held: _Held) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(f"the body passed {max_bytes:,} bytes while streaming", max_bytes)
        held.take(len(chunk))
        yield chunk


async def _read_multipart(request: Request, max_bytes: int, held: _Held) -> tuple[Upload, str]:
    parser = MultiPartParser(request.headers, _bounded(request, max_bytes, held), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    try:
        part = form.get(UPLOAD_FIELD)
        if not isinstance(part, UploadFile):
            sent = ", ".join(sorted(form.keys())) or "none"
            raise HTTPException(422, f"multipart field '{UPLOAD_FIELD}' with a photo is missing (fields sent: {sent})")
        return Upload(await part.read(), part.filename), part.content_type or ""
    finally:
        await form.close()


def _check_media_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and not media_type.startswith(ACCEPTED_MEDIA_TYPES):
        raise HTTPException(
            415, f"unsupported media type '{media_type}': send a photo (image/* or application/octet-stream)"
        )


def _too_large(what: str, max_bytes: int) -> HTTPException:
    return HTTPException(413, f"upload too large: {what}; the limit is {max_bytes:,} bytes (--max-body-mb)")
