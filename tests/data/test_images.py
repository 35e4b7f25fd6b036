"""decode_image on hostile and unusual input, resizing, PNG and mask encoding."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.images import (
    ImageDecodeError,
    decode_image,
    encode_png,
    fit_to_resolution,
    mask_coverage,
    mask_to_png,
    restore_size,
)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(size=(64, 64), seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is patched to claim width x height, with a valid CRC."""
    data = bytearray(_save(Image.new("RGB", (1, 1)), "PNG"))
    # Signature (8) | IHDR length (4) | b"IHDR" (4) | width (4) | height (4) | ... | CRC
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- hostile input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "0 bytes"),
        (b"hello, I am a text file named photo.png\n", "not an image"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image"),
    ],
    ids=["zero-bytes", "text", "random-bytes", "png-signature-then-garbage"],
)
def test_non_images_raise_decode_error(data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_raise_decode_error(fmt):
    whole = _save(_noise(), fmt)
    assert decode_image(whole).size == (64, 64)
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode_image(whole[: len(whole) // 2])


def test_refused_format_is_not_an_image():
    # EPS would make Pillow run Ghostscript; it is not in IMAGE_FORMATS.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(eps)


def test_header_over_the_cap_is_refused_before_decoding():
    bomb = _png_claiming(8000, 8000)  # 64 MP: under Pillow's own limit, over ours
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bomb)
    assert time.perf_counter() - started < 1.0
    # Decoding would have failed with a truncation error instead: the check ran on the header.
    assert str(caught.value) == "image is 8000x8000 = 64 megapixels, over the 40 megapixel cap"


def test_gigapixel_bomb_refused_by_pillow_becomes_decode_error():
    limit_before = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"2\.5 gigapixels, over the 40 megapixel cap"):
        decode_image(_png_claiming(50000, 50000))
    assert time.perf_counter() - started < 1.0
    assert Image.MAX_IMAGE_PIXELS == limit_before  # no process-wide change


def test_max_pixels_is_a_parameter():
    data = _save(_noise((100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="100x100"):
        decode_image(data, max_pixels=5000)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


# --- modes ------------------------------------------------------------------------------------


def _rgb(data: bytes) -> np.ndarray:
    image = decode_image(data)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_grayscale_becomes_gray_rgb():
    pixels = _rgb(_save(Image.new("L", (4, 4), 100), "PNG"))
    assert (pixels == 100).all()


def test_one_bit_becomes_black_and_white():
    image = Image.new("1", (4, 2), 0)
    image.putpixel((0, 0), 1)
    pixels = _rgb(_save(image, "PNG"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[1, 3].tolist() == [0, 0, 0]


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    pixels = _rgb(_save(image, "PNG"))
    assert pixels[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white, not red or black
    assert pixels[0, 1].tolist() == [0, 0, 255]
    assert all(abs(v - 127) <= 1 for v in pixels[0, 2])  # half-transparent black over white


def test_gray_with_alpha_is_composited_on_white():
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (50, 255)])
    pixels = _rgb(_save(image, "PNG"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [50, 50, 50]


def test_palette_with_transparent_index_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.putdata([0, 1])
    pixels = _rgb(_save(image, "PNG", transparency=0))
    assert pixels[0, 0].tolist() == [255, 255, 255]  # index 0 is transparent black
    assert pixels[0, 1].tolist() == [255, 0, 0]


def test_palette_without_transparency_keeps_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    image.putdata([0, 1])
    pixels = _rgb(_save(image, "PNG"))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, 1].tolist() == [0, 255, 0]


def test_cmyk_jpeg_becomes_rgb():
    red_in_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    pixels = _rgb(_save(red_in_cmyk, "JPEG", quality=95))
    red, green, blue = pixels[8, 8]
    assert red > 230 and green < 25 and blue < 25


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    data = _save(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit file
    pixels = _rgb(data)
    # Clipping would map 1000 to 255; scaling maps it to 4.
    assert pixels[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    decoded = decode_image(_save(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (20, 40)
    pixels = np.asarray(decoded).astype(int)
    assert pixels[5, 10, 0] > 200 and pixels[5, 10, 2] < 60  # the left edge is now on top
    assert pixels[35, 10, 2] > 200 and pixels[35, 10, 0] < 60


@pytest.mark.parametrize("size", [(1, 1), (3, 7), (7, 3)])
def test_tiny_images_decode_and_fit(size):
    image = decode_image(_save(Image.new("RGB", size, (10, 20, 30)), "PNG"))
    assert image.size == size
    fitted = fit_to_resolution(image, 64)
    assert max(fitted.size) == 64
    assert all(side >= 8 and side % 8 == 0 for side in fitted.size)


# --- resizing and encoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, resolution, expected",
    [
        ((1024, 768), 512, (512, 384)),  # down, aspect kept exactly
        ((100, 50), 512, (512, 256)),  # up
        ((500, 333), 512, (512, 344)),  # 340.9 rounds to the nearest multiple of 8
        ((3, 7), 64, (24, 64)),
        ((1, 5000), 512, (8, 512)),  # never a zero side
        ((5000, 1), 512, (512, 8)),
        ((512, 512), 512, (512, 512)),
    ],
)
def test_fit_to_resolution_sizes(size, resolution, expected):
    assert fit_to_resolution(Image.new("RGB", size), resolution).size == expected


def test_fit_to_resolution_other_multiple_and_bad_arguments():
    assert fit_to_resolution(Image.new("RGB", (300, 200)), 256, multiple=64).size == (256, 192)
    with pytest.raises(ValueError):
        fit_to_resolution(Image.new("RGB", (10, 10)), 4)


def test_encode_png_round_trips_pixels():
    image = _noise((9, 5))
    assert np.array_equal(np.asarray(decode_image(encode_png(image))), np.asarray(image))


def test_restore_size():
    assert restore_size(Image.new("RGB", (64, 48)), (13, 7)).size == (13, 7)


def test_mask_to_png_upscales_nearest_to_binary_gray():
    mask = np.array([[0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    image = Image.open(io.BytesIO(mask_to_png(mask, (6, 4))))
    assert image.mode == "L" and image.size == (6, 4)
    expected = np.kron(mask, np.ones((2, 2), dtype=np.uint8)) * 255
    assert np.array_equal(np.asarray(image), expected)


def test_mask_to_png_accepts_leading_unit_axes_and_rejects_other_shapes():
    mask = np.ones((1, 1, 2, 2), dtype=np.uint8)
    assert np.asarray(Image.open(io.BytesIO(mask_to_png(mask, (2, 2))))).min() == 255
    with pytest.raises(ValueError, match="2-D"):
        mask_to_png(np.ones((2, 2, 2)), (2, 2))


def test_mask_coverage():
    assert mask_coverage(np.array([[0, 1, 0], [1, 1, 0]], dtype=np.uint8)) == 0.5
    assert mask_coverage(np.zeros((4, 4), dtype=np.uint8)) == 0.0
    assert mask_coverage(np.zeros((0,), dtype=np.uint8)) == 0.0
