"""Turn the bytes of any photo a real folder holds into uint8 RGB pixels, or say in a few words why not.

Everything is decided by content, never by file name: a PNG called `.jpg` is a PNG. Each odd case has one
rule, so that training, the cache and serving see the same pixels for the same bytes:

- EXIF orientation is applied (phones store portraits rotated, with a tag saying so);
- transparency (RGBA, LA, PA, palette or single-colour `tRNS`) is composited on white, as viewers show it;
- CMYK, YCbCr, grayscale and 1-bit become RGB; 16-bit images keep their top 8 bits (Pillow's own RGB
  conversion clips 16-bit values to 255, which turns a 16-bit PNG white);
- an animated GIF/WEBP gives its first frame;
- only the formats a photo folder needs are opened (`ALLOWED_FORMATS`); anything else, EPS/PostScript
  above all (Pillow hands it to Ghostscript, an external program), is "not an image" and never parsed;
- an image declaring more than `MAX_PIXELS` pixels is refused from its header, before any pixel is
  decoded (a "decompression bomb": a tiny file that would need gigabytes of memory); a caller may set a
  lower bound on the pixels actually decoded (`max_pixels`: the server does), which bounds the decode's
  time and memory (both grow with the decoded pixels: ~0.1 s and ~12 bytes per megapixel... see
  RELIABILITY.md), while a large JPEG still passes when DCT scaling decodes it small;
- a truncated file is an error: Pillow's `LOAD_TRUNCATED_IMAGES` stays off, so a photo missing its end is
  never silently filled with grey.

With a `Resize`, a JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT
scaling (`draft`): the photo is never decoded at full size, which DESIGN.md measured as 2.5x faster.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from automl.data.resize import Resize

MAX_PIXELS = 89_478_485
"""Largest image accepted (width x height): Pillow's own warning threshold, about 0.25 GB as RGB; well above
any camera photo up to 64 megapixels. Pillow warns between this and twice it and fails above; we refuse
everything above it with one clear reason, so its warning is silenced below."""

warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow decoders a photo may use. Camera, phone and web formats only (MPO, a phone's multi-picture JPEG, is
opened by the JPEG decoder): no EPS/PS (runs Ghostscript), no PDF, ICNS, DDS, PSD, FITS, ... Each allowed
plugin decodes in-process, in Pillow's own C code."""

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageError(Exception):
    """The bytes are not a usable image; `reason` is a short human explanation (no traceback needed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: its real format (not its extension), mode, size and frame count."""

    format: str
    mode: str
    width: int
    height: int
    frames: int = 1


def probe_image(data: bytes) -> ImageInfo:
    """Read only the header: format, mode, size. Cheap; refuses bombs, but does not see truncation."""
    with _open(data) as image:
        return _info(image)


def verify_image(data: bytes) -> ImageInfo:
    """The header's facts, after a full decode proves the data is whole (a JPEG at 1/8 scale: cheap)."""
    with _open(data) as image:
        info = _info(image)
        if _is_jpeg(image):
            image.draft(None, (1, 1))
        _decoded(image)
        return info


def decode_image(data: bytes | bytearray, resize: Resize | None = None, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `data` into a uint8 RGB array (H, W, 3); with `resize`, centre-crop and resize to a square.

    `max_pixels` bounds the pixels really decoded (after a JPEG's DCT scaling), hence time and memory.
    Raises `ImageError` with a short reason for anything that cannot be decoded.
    """
    with _open(data) as image:
        _info(image)  # refuses what `verify_image` refuses (a damaged animation), so scan and decode agree
        if resize is not None and _is_jpeg(image):
            image.draft(image.mode if image.mode in ("RGB", "L") else None, _draft_size(image.size, resize))
        _within(image.size, max_pixels)  # after `draft`: what will really be decoded
        rgb = _decoded(image)
        if resize is not None:
            rgb = _crop_and_resize(rgb, resize)
        return np.asarray(rgb, dtype=np.uint8)


def decoded_pixels(data: bytes | bytearray, resize: Resize | None = None, *, max_pixels: int = MAX_PIXELS) -> int:
    """How many pixels `decode_image(data, resize)` would decode (a JPEG after DCT scaling), from the header
    only: the decode's cost in time and memory, known before paying it (the server budgets with it).
    Raises `ImageError` as `decode_image` would when that passes `max_pixels`."""
    with _open(data) as image:
        if resize is not None and _is_jpeg(image):
            image.draft(image.mode if image.mode in ("RGB", "L") else None, _draft_size(image.size, resize))
        return _within(image.size, max_pixels)


def _within(size: tuple[int, int], max_pixels: int) -> int:
    """The pixels of `size`, or ImageError when they pass `max_pixels`."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large to decode here: {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (--max-pixels)"
        )
    return width * height


def _decoded(image: Image.Image) -> Image.Image:
    """Load the pixels, upright and RGB; any decoder failure becomes an ImageError."""
    try:
        image.load()
        return _to_rgb(_upright(image))
    except Exception as exc:  # Pillow's decoders raise a zoo of types for bad data
        raise ImageError(_decode_failure(exc)) from exc


def _open(data: bytes | bytearray) -> Image.Image:
    """Open from the header only; every refusal becomes an ImageError with a reason."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, above twice its warning threshold
        raise ImageError(
            f"decompression bomb refused: declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, the limit "
            f"is {MAX_PIXELS:,}"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(_not_an_image(data)) from exc
    except Exception as exc:
        raise ImageError(_decode_failure(exc)) from exc
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageError(
            f"decompression bomb refused: {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {MAX_PIXELS:,}"
        )
    if width == 0 or height == 0:
        image.close()
        raise ImageError(f"image has no pixels ({width}x{height})")
    return image


def _is_jpeg(image: Image.Image) -> bool:
    """A JPEG, including a multi-picture one (MPO: phone and camera photos carrying a gain map or depth
    picture after the photo), which Pillow opens as its own format but decodes, and DCT-scales, as a JPEG."""
    return isinstance(image, JpegImagePlugin.JpegImageFile)


def _info(image: Image.Image) -> ImageInfo:
    width, height = image.size
    if _is_jpeg(image):  # an MPO's extra pictures are not frames of an animation: the photo is the first
        return ImageInfo("JPEG", image.mode, width, height)
    try:
        frames = int(getattr(image, "n_frames", 1))  # walks an animation's frame headers
    except Exception as exc:
        raise ImageError(f"corrupt animation: a frame header is damaged ({type(exc).__name__})") from exc
    return ImageInfo(str(image.format), image.mode, width, height, frames)


def _not_an_image(data: bytes | bytearray) -> str:
    head = data[:512]
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "not an image: the file holds text"
    return "not an image: content matches no known image format"


def _decode_failure(exc: Exception) -> str:
    message = str(exc)
    if "truncated" in message.lower() or isinstance(exc, EOFError):
        return "truncated or incomplete file: the image data ends early"
    return f"corrupt image data ({type(exc).__name__}: {message})"


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the pixels as stored rather than losing them."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return image


def _draft_size(size: tuple[int, int], resize: Resize) -> tuple[int, int]:
    """The smallest size whose centre crop still covers `resize.size`: draft decodes at 1/s >= that."""
    scale = resize.size / (resize.crop_fraction * min(size))
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        high_byte = (np.clip(np.asarray(image), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high_byte).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # Pasted through its alpha onto white: the same pixels as `alpha_composite` on opaque white (tested),
        # with a third of its peak memory (no white RGBA copy, no RGBA result): 9000x9000 RGBA 1.3 -> 0.7 GB.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    return image if image.mode == "RGB" else image.convert("RGB")


def _crop_and_resize(image: Image.Image, resize: Resize) -> Image.Image:
    width, height = image.size
    side = resize.crop_fraction * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize(
        (resize.size, resize.size),
        _RESAMPLE[resize.resample],
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )
