"""Every odd image file a real folder holds, generated with Pillow (no binary fixtures in the repository).

Each generator returns the file's bytes; `odd_dataset(root)` lays them out as a dataset folder and says
which files must load and which must be skipped, with a word their reason must contain.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 160, 0), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A distinct RGB picture per seed, so that every generated file has distinct bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    return encode(noise(seed, size), "JPEG", quality=90)


def png(seed: int) -> bytes:
    return encode(noise(seed), "PNG")


def webp(seed: int) -> bytes:
    return encode(noise(seed), "WEBP", quality=90)


def rgba_half_transparent() -> bytes:
    """Left half opaque red, right half fully transparent (stored as transparent black)."""
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.paste((*RED, 255), (0, 0, 20, 20))
    return encode(image, "PNG")


def la_transparent() -> bytes:
    return encode(Image.new("LA", (16, 16), (0, 0)), "PNG")


def palette(transparent: bool) -> bytes:
    """A palette PNG: index 0 red, index 1 blue; with `transparent`, index 1 is see-through."""
    image = Image.new("P", (20, 10), 0)
    image.putpalette([*RED, *BLUE] + [0, 0, 0] * 254)
    image.paste(1, (10, 0, 20, 10))
    return encode(image, "PNG", transparency=1) if transparent else encode(image, "PNG")


def grayscale(value: int = 90) -> bytes:
    return encode(Image.new("L", (24, 24), value), "PNG")


def cmyk_jpeg() -> bytes:
    """Pure cyan in CMYK: (255, 0, 0, 0) shows as (0, 255, 255)."""
    return encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95)


def sixteen_bit_png(value: int = 0x8000) -> bytes:
    return encode(Image.fromarray(np.full((16, 16), value, dtype=np.uint16)), "PNG")


def animated_gif() -> bytes:
    """Two frames: red then blue. The first frame is the image."""
    frames = [Image.new("RGB", (20, 20), RED), Image.new("RGB", (20, 20), BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_gif_cut_in_second_frame() -> bytes:
    data = animated_gif()
    return data[: data.rindex(b"\x21\xf9") + 3]  # inside the second frame's graphic control block


def exif_rotated_jpeg() -> bytes:
    """Stored 60x30, left half red and right half blue, with EXIF orientation 6 (display rotated 90° clockwise).

    Shown upright it is 30 wide and 60 tall, red on top.
    """
    image = Image.new("RGB", (60, 30), BLUE)
    image.paste(RED, (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def truncated_jpeg() -> bytes:
    data = jpeg(99, (256, 256))
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(noise(98, (128, 128)), "PNG")
    return data[: len(data) // 2]


def decompression_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with a few bytes of data: tiny on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


TEXT = b"name,label\ncat (1).jpg,cat\n"


@dataclass
class OddDataset:
    """Where each case was written: files that must load, files that must be skipped (with a reason word)."""

    root: Path
    good: list[Path] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)


def odd_dataset(root: Path) -> OddDataset:
    """A dataset folder holding every odd case: classes `cat` and `dog` (usable), `empty`, `tiny` (2 images)."""
    out = OddDataset(root)

    def write(relative: str, data: bytes, skip_reason: str | None = None) -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if skip_reason is None:
            out.good.append(path)
        else:
            out.skipped[path] = skip_reason
        return path

    write("cat/plain.jpg", jpeg(1))
    write("cat/png named.jpg", png(2))
    write("cat/webp named.jpg", webp(3))
    write("cat/rgba.png", rgba_half_transparent())
    write("cat/la.png", la_transparent())
    write("cat/palette.png", palette(transparent=False))
    write("cat/palette transparent.png", palette(transparent=True))
    write("cat/gray.png", grayscale())
    write("cat/cmyk.jpg", cmyk_jpeg())
    write("cat/16bit.png", sixteen_bit_png())
    write("cat/animated.gif", animated_gif())
    write("cat/rotated.jpg", exif_rotated_jpeg())
    write("cat/chat noir é (1).jpg", jpeg(4))
    write("cat/猫 2.png", png(5))
    write("cat/truncated.jpg", truncated_jpeg(), "truncated")
    write("cat/truncated.png", truncated_png(), "truncated")
    write("cat/cut animation.gif", animated_gif_cut_in_second_frame(), "corrupt animation")
    write("cat/zero.jpg", b"", "empty")
    write("cat/notes.jpg", TEXT, "not an image")
    write("cat/bomb.png", decompression_bomb(), "decompression bomb")
    write("cat/.DS_Store", b"\x00\x00\x00\x01Bud1", "hidden")
    write("cat/._plain.jpg", jpeg(6), "hidden")
    (root / "cat" / "more").mkdir()
    (root / "cat" / "more" / "inner.jpg").write_bytes(jpeg(7))
    out.skipped[root / "cat" / "more"] = "sub-folder"
    write("cat/plain copy.jpg", (root / "cat" / "plain.jpg").read_bytes())  # in-class duplicate: counts once

    for seed in range(10, 14):
        write(f"dog/dog {seed}.jpg", jpeg(seed))
    mixup = jpeg(20)
    write("cat/mixup.jpg", mixup, "labelling error")
    write("dog/mixup.jpg", mixup, "labelling error")

    (root / "empty").mkdir()
    write("tiny/one.jpg", jpeg(30))
    write("tiny/two.jpg", jpeg(31))
    write("README.txt", TEXT, "top level")
    (root / ".thumbnails").mkdir()
    out.skipped[root / ".thumbnails"] = "hidden"
    return out
