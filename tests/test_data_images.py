"""decode_image on every odd file real folders hold: pixels checked, not just "no exception"."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_cases import (
    BLUE,
    RED,
    TEXT,
    WHITE,
    animated_gif,
    animated_gif_cut_in_second_frame,
    cmyk_jpeg,
    decompression_bomb,
    encode,
    exif_rotated_jpeg,
    grayscale,
    jpeg,
    la_transparent,
    noise,
    palette,
    png,
    rgba_half_transparent,
    sixteen_bit_png,
    truncated_jpeg,
    truncated_png,
    webp,
)
from PIL import Image, ImageFile

from automl.data.images import MAX_PIXELS, ImageError, decode_image, decoded_pixels, probe_image, verify_image
from automl.data.resize import Resize


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def test_a_multi_picture_jpeg_is_a_jpeg_decoded_at_reduced_scale() -> None:
    """Phone photos with a gain map or depth picture are MPO files: one JPEG photo plus extra pictures.
    They must not count as animations, and must get the JPEG's DCT-scaled decode (pixel for pixel what
    the same photo as a plain JPEG gives; a full-size decode then resize differs)."""
    photo = noise(7, (1600, 1200))
    mpo = encode(photo, "MPO", save_all=True, append_images=[photo.resize((400, 300))], quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert probe_image(mpo) == verify_image(mpo) == probe_image(encode(photo, "JPEG", quality=90))
    resize = Resize(224, 0.875, "bicubic")
    assert np.array_equal(decode_image(mpo, resize), decode_image(encode(photo, "JPEG", quality=90), resize))


def test_format_is_read_from_content_not_extension() -> None:
    for data, fmt in ((png(1), "PNG"), (webp(2), "WEBP"), (jpeg(3), "JPEG")):
        pixels = decode_image(data)
        assert pixels.shape == (40, 48, 3) and pixels.dtype == np.uint8
        assert probe_image(data).format == fmt


def test_lossless_png_pixels_are_exact() -> None:
    assert np.array_equal(decode_image(png(4)), np.asarray(noise(4)))


def test_rgba_transparency_is_composited_on_white() -> None:
    pixels = decode_image(rgba_half_transparent())
    assert close_to(pixels[10, 5], RED, 0)
    assert close_to(pixels[10, 35], WHITE, 0)  # transparent black must not come out black


def test_la_transparency_is_white() -> None:
    assert close_to(decode_image(la_transparent())[0, 0], WHITE, 0)


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_images(transparent: bool) -> None:
    pixels = decode_image(palette(transparent))
    assert close_to(pixels[5, 2], RED, 0)
    assert close_to(pixels[5, 15], WHITE if transparent else BLUE, 0)


def test_grayscale_becomes_three_equal_channels() -> None:
    pixels = decode_image(grayscale(90))
    assert pixels.shape == (24, 24, 3) and np.all(pixels == 90)


def test_cmyk_jpeg_becomes_rgb() -> None:
    assert probe_image(cmyk_jpeg()).mode == "CMYK"
    assert close_to(decode_image(cmyk_jpeg())[16, 16], (0, 255, 255), 20)


def test_sixteen_bit_png_keeps_its_high_byte() -> None:
    """Pillow's plain RGB conversion would clip 0x8000 to 255 (white)."""
    assert probe_image(sixteen_bit_png()).mode.startswith("I")
    assert np.all(decode_image(sixteen_bit_png(0x8000)) == 0x80)
    assert np.all(decode_image(sixteen_bit_png(0x1234)) == 0x12)


def test_animated_gif_gives_its_first_frame() -> None:
    data = animated_gif()
    assert probe_image(data).frames == 2
    assert close_to(decode_image(data)[10, 10], RED, 0)


def test_exif_orientation_is_applied() -> None:
    pixels = decode_image(exif_rotated_jpeg())
    assert pixels.shape == (60, 30, 3)  # stored 60 wide x 30 tall, shown rotated
    assert close_to(pixels[10, 15], RED) and close_to(pixels[50, 15], BLUE)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (TEXT, "text"),
        (b"\x00\x01\x02\x03garbage" * 10, "no known image format"),
        (truncated_jpeg(), "truncated"),
        (truncated_png(), "truncated"),
        (animated_gif_cut_in_second_frame(), "corrupt animation"),
        (decompression_bomb(), "decompression bomb"),  # above twice Pillow's limit: Pillow's own refusal
        (decompression_bomb(10_000, 9_000), "decompression bomb"),  # between the limits: our check
    ],
    ids=[
        "zero-byte",
        "text",
        "binary-junk",
        "truncated-jpeg",
        "truncated-png",
        "cut-gif",
        "bomb-huge",
        "bomb-just-above",
    ],
)
def test_unusable_bytes_raise_image_error_with_reason(data: bytes, reason: str) -> None:
    for decode in (decode_image, verify_image):
        with pytest.raises(ImageError) as error:
            decode(data)
        assert reason in error.value.reason
        assert "\n" not in error.value.reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_is_refused_from_its_header_without_allocating() -> None:
    assert MAX_PIXELS < 10_000 * 9_000
    with pytest.raises(ImageError, match="90,000,000 pixels"):
        probe_image(decompression_bomb(10_000, 9_000))


def test_truncated_images_are_not_silently_accepted() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    probe_image(truncated_jpeg())  # the header alone looks fine...
    with pytest.raises(ImageError):
        decode_image(truncated_jpeg(), Resize(32))  # ...the decode, even scaled down, is not


def test_resize_centre_crops_the_short_side() -> None:
    """A green square inside a red frame: a 40 % centre crop (80 px of the 100 px green) keeps only green."""
    image = Image.new("RGB", (300, 200), RED)
    image.paste((0, 160, 0), (100, 50, 200, 150))
    pixels = decode_image(encode(image, "PNG"), Resize(size=20, crop_fraction=0.4, resample="bicubic"))
    assert pixels.shape == (20, 20, 3)
    assert all(close_to(pixels[y, x], (0, 160, 0), 8) for y in (0, 10, 19) for x in (0, 10, 19))


def test_large_jpeg_decoded_scaled_down_matches_full_decode() -> None:
    """DCT-scaled decoding (draft) of a big photo gives the same picture as decoding at full size."""
    y, x = np.mgrid[0:1200, 0:1800]
    smooth = np.stack([x * 255 // 1800, y * 255 // 1200, (x + y) * 255 // 3000], axis=-1).astype(np.uint8)
    data = encode(Image.fromarray(smooth), "JPEG", quality=90)
    resize = Resize(size=224, crop_fraction=0.875, resample="bicubic")
    scaled = decode_image(data, resize)
    reference = Image.fromarray(decode_image(data))
    side = 0.875 * 1200
    box = ((1800 - side) / 2, (1200 - side) / 2, (1800 + side) / 2, (1200 + side) / 2)
    full = np.asarray(reference.resize((224, 224), Image.Resampling.BICUBIC, box=box))
    assert scaled.shape == (224, 224, 3)
    assert np.abs(scaled.astype(int) - full.astype(int)).mean() < 2.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_random_damage_gives_pixels_or_image_error_never_a_crash() -> None:
    """Flipped bytes and cuts anywhere in every format: the only failure decode_image may raise is ImageError."""
    rng = np.random.default_rng(0)
    originals = [jpeg(1), png(2), webp(3), animated_gif(), cmyk_jpeg(), sixteen_bit_png(), exif_rotated_jpeg()]
    outcomes = {"decoded": 0, "refused": 0}
    for original in originals:
        for _ in range(40):
            damaged = bytearray(original)
            for position in rng.integers(0, len(damaged), size=rng.integers(1, 6)):
                damaged[position] = rng.integers(0, 256)
            cut = bytes(damaged[: rng.integers(1, len(damaged) + 1)])
            try:
                pixels = decode_image(cut, Resize(16))
            except ImageError:
                outcomes["refused"] += 1
            else:
                assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
                outcomes["decoded"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 40 * len(originals)


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 100, 50)[: len(mode)] if mode != "P" else 3).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"])
def test_every_allowed_format_decodes(fmt: str) -> None:
    assert decode_image(_encoded(fmt)).shape == (30, 40, 3)


@pytest.mark.parametrize("fmt", ["EPS", "PPM", "ICO", "PCX", "TGA", "SGI", "IM", "DDS"])
def test_formats_outside_the_allow_list_are_not_images(fmt: str) -> None:
    """EPS above all: Pillow would hand it to Ghostscript, an external program."""
    with pytest.raises(ImageError, match="not an image"):
        decode_image(_encoded(fmt, "RGBA" if fmt == "DDS" else "RGB"))


def test_postscript_named_jpg_never_runs_a_program() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke showpage\n"
    with pytest.raises(ImageError) as refused:
        decode_image(eps)
    assert refused.value.reason == "not an image: the file holds text"


def test_transparency_on_white_equals_alpha_composite() -> None:
    """The lean compositing (paste through alpha) gives exactly Pillow's alpha_composite on opaque white."""
    rgba = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 80, 4), dtype=np.uint8), "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert np.array_equal(decode_image(buffer.getvalue()), expected)


def test_max_pixels_bounds_what_is_decoded_not_what_is_declared() -> None:
    png = _encoded("PNG", size=(1000, 1000))
    with pytest.raises(ImageError, match=r"1000x1000 = 1,000,000 pixels, more than the limit of 999,999"):
        decode_image(png, max_pixels=999_999)
    assert decoded_pixels(png) == 1_000_000
    large_jpeg = _encoded("JPEG", size=(4000, 3000))  # DCT scaling decodes it at 1/8 for a 224 px input
    resize = Resize(224, 0.875, "bicubic")
    assert decoded_pixels(large_jpeg, resize) == 500 * 375
    assert decode_image(large_jpeg, resize, max_pixels=200_000).shape == (224, 224, 3)
