"""Decode untrusted image bytes to RGB, fit them to the model's resolution, encode results as PNG."""

from __future__ import annotations

import functools
import io
import math
import re

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_FORMATS",
    "ImageDecodeError",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "default_buckets",
    "fit_to_bucket",
    "fit_to_resolution",
    "image_extension",
    "parse_buckets",
    "mask_coverage",
    "mask_to_png",
    "restore_size",
    "sdxl_buckets",
    "upright_image_bytes",
    "upsample_mask",
]

_WHITE = (255, 255, 255)

# Formats a manifest may point at. Pillow knows ~40 more; exotic ones widen the attack surface
# (EPS even runs Ghostscript), so they are refused as "not an image". JPEG covers phones' MPO.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


@functools.cache
def _readable_formats() -> tuple[str, ...]:
    # Pillow raises KeyError for a format its build lacks (AVIF needs libavif).
    Image.init()
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


class ImageDecodeError(ValueError):
    """The bytes are not a usable image: not an image, corrupt, truncated, or too large."""


def _pixels_text(pixels: int, unit_suffix: str = "s") -> str:
    if pixels >= 1_000_000_000:
        return f"{pixels / 1e9:.3g} gigapixel{unit_suffix}"
    return f"{pixels / 1e6:.3g} megapixel{unit_suffix}"


def _cap_text(max_pixels: int) -> str:
    return f"the {_pixels_text(max_pixels, unit_suffix='')} cap"


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversize images before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=_readable_formats())
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not an image: cannot identify image file ({len(data)} bytes); "
            f"readable formats: {', '.join(_readable_formats())}"
        ) from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses images over 2 * Image.MAX_IMAGE_PIXELS inside open(), before we can read
        # the size; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = _pixels_text(int(found.group(1))) if found else "too large"
        raise ImageDecodeError(
            f"image is {size}, over {_cap_text(max_pixels)} (possible decompression bomb)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - see decode_image
        raise ImageDecodeError(f"corrupt image header ({len(data)} bytes): {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {_pixels_text(width * height)}, "
            f"over {_cap_text(max_pixels)}"
        )
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has an empty size {width}x{height}")
    return image


def _sixteen_bit_to_8(image: Image.Image) -> Image.Image:
    """Scale 16-bit ("I;16*") or 32-bit integer ("I") grayscale to 8 bits, without clipping."""
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or (values.min() >= 0 and values.max() <= 65535):
        scaled = values / 257.0  # 65535 -> 255, the full 16-bit range onto the 8-bit one
    else:
        low, high = values.min(), values.max()
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _float_to_8(image: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if values.min() < 0 or values.max() > 1:
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16") or image.mode == "I":
        image = _sixteen_bit_to_8(image)
    elif image.mode == "F":
        image = _float_to_8(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode untrusted image bytes to an RGB image, upright per its EXIF orientation.

    Transparency is composited on white; 16-bit images are scaled to 8 bits; CMYK, palette,
    1-bit and grayscale become RGB. Raises ImageDecodeError for empty, corrupt, truncated or
    non-image data, and for images over ``max_pixels`` (checked from the header, before decoding;
    Pillow's own limit of 2 * ``Image.MAX_IMAGE_PIXELS`` still applies above it).
    """
    if not data:
        raise ImageDecodeError("not an image: empty data (0 bytes)")
    image = _open_checked(data, max_pixels)
    try:
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not reject good pixels
            pass
        return _to_rgb(image)
    except ImageDecodeError:
        raise
    # Pillow's format plugins raise a zoo of types on hostile input (OSError, SyntaxError,
    # ValueError, struct.error, IndexError...); every one of them means "not a usable image".
    except Exception as exc:  # noqa: BLE001
        raise ImageDecodeError(f"corrupt or truncated image ({len(data)} bytes): {exc}") from exc


def fit_to_resolution(image: Image.Image, resolution: int, multiple: int = 8) -> Image.Image:
    """Resize (LANCZOS) so the longer side is ``resolution``, keeping the aspect ratio.

    Each side is rounded to the nearest multiple of ``multiple`` and is at least ``multiple``, so
    extreme shapes (1x5000) still give a valid model input. Returns ``image`` itself when it
    already has that size.
    """
    if multiple < 1 or resolution < multiple:
        raise ValueError(f"need resolution >= multiple >= 1, got {resolution} and {multiple}")
    width, height = image.size
    scale = resolution / max(width, height)

    def side(length: int) -> int:
        # floor(x + 0.5), not round(): Python's round() sends halves to even.
        return max(multiple, math.floor(length * scale / multiple + 0.5) * multiple)

    size = (side(width), side(height))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def bucket_step(resolution: int) -> int:
    """The side granularity of the automatic aspect buckets: 64 px from 512 px up (SDXL's), finer below, always a
    multiple of 8 (the VAE's latent cell)."""
    return 64 if resolution >= 512 else max(8, resolution // 8 // 8 * 8)


def default_buckets(resolution: int) -> tuple[tuple[int, int], ...]:
    """Shapes (width, height) of about `resolution`^2 pixels, sides multiples of `bucket_step`, aspect 1:4 to 4:1,
    as SDXL buckets its training images: a picture is resized to the one nearest its aspect ratio."""
    step = bucket_step(resolution)
    area = resolution * resolution
    best: dict[int, int] = {}  # the shorter side -> the longer side that makes the area nearest the target
    for long in range(resolution // step * step, 4 * resolution + 1, step):
        short = max(step, round(area / long / step) * step)
        if short <= long and long <= 4 * short:
            if short not in best or abs(short * long - area) < abs(short * best[short] - area):
                best[short] = long
    shapes = {(long, short) for short, long in best.items()} | {(short, long) for short, long in best.items()}
    return tuple(sorted(shapes))


# The SDXL paper's multi-aspect training resolutions (Podell et al. 2023, appendix: height x width, about 1024^2
# px each, aspect 1:4 to 4:1), as (width, height). An SDXL model edits best at the shapes it was trained at.
SDXL_TRAINING_SHAPES: tuple[tuple[int, int], ...] = tuple(sorted({
    (width, height) for height, width in (
        (512, 2048), (512, 1984), (512, 1920), (512, 1856), (576, 1792), (576, 1728), (576, 1664), (640, 1600),
        (640, 1536), (704, 1472), (704, 1408), (704, 1344), (768, 1344), (768, 1280), (832, 1216), (832, 1152),
        (896, 1152), (896, 1088), (960, 1088), (960, 1024), (1024, 1024), (1024, 960), (1088, 960), (1088, 896),
        (1152, 896), (1152, 832), (1216, 832), (1280, 768), (1344, 768), (1344, 704), (1408, 704), (1472, 704),
        (1536, 640), (1600, 640), (1664, 576), (1728, 576), (1792, 576), (1856, 512), (1920, 512), (1984, 512),
        (2048, 512),
    )
}))


def sdxl_buckets(resolution: int) -> tuple[tuple[int, int], ...]:
    """SDXL's training shapes at 1024 px; at another resolution each scaled by resolution / 1024 to multiples of
    `bucket_step` (so a smaller SDXL-family model keeps SDXL's set of aspect ratios)."""
    if resolution == 1024:
        return SDXL_TRAINING_SHAPES
    step = bucket_step(resolution)

    def side(length: int) -> int:
        return max(step, round(length * resolution / 1024 / step) * step)

    return tuple(sorted({(side(width), side(height)) for width, height in SDXL_TRAINING_SHAPES}))


FLOW_FAMILIES = ("sd3", "flux")  # rectified-flow transformers: pictures in multiples of 16 px (VAE 8 x patch 2)


def picture_multiple(family: str | None) -> int:
    """The side multiple a model family's pipeline accepts: 16 px on SD3 and FLUX.1, else 8 (the VAE's cell)."""
    return 16 if family in FLOW_FAMILIES else 8


def flow_buckets(resolution: int) -> tuple[tuple[int, int], ...]:
    """SD3's and FLUX.1's shapes: about `resolution`^2 pixels (one megapixel at 1024, what both train at), aspect 1:4
    to 4:1, the longer side in steps of `bucket_step` (at least 16 px) and the shorter the multiple of 16 px nearest
    the area."""
    step = max(16, bucket_step(resolution) // 16 * 16)
    area = resolution * resolution
    best: dict[int, int] = {}
    for long in range(resolution // step * step, 4 * resolution + 1, step):
        short = max(16, round(area / long / 16) * 16)
        if short <= long and long <= 4 * short:
            if short not in best or abs(short * long - area) < abs(short * best[short] - area):
                best[short] = long
    shapes = {(long, short) for short, long in best.items()} | {(short, long) for short, long in best.items()}
    return tuple(sorted(shapes))


def parse_buckets(spec: str, resolution: int, family: str | None = None) -> tuple[tuple[int, int], ...] | None:
    """`off` -> None (keep aspect ratios: `fit_to_resolution`); `auto` -> `sdxl_buckets(resolution)` for an SDXL
    model (`family` "sdxl"), `flow_buckets(resolution)` for SD3 and FLUX.1, else `default_buckets(resolution)`;
    `WxH,WxH,...` -> those shapes, each side a positive multiple of 8 (16 on SD3 and FLUX.1). Raises ValueError
    naming a bad entry."""
    spec = spec.strip().lower()
    if spec == "off":
        return None
    if spec == "auto":
        if family in FLOW_FAMILIES:
            return flow_buckets(resolution)
        return sdxl_buckets(resolution) if family == "sdxl" else default_buckets(resolution)
    shapes = []
    for entry in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", entry)
        if not match:
            raise ValueError(f"must be off, auto or a list of WxH shapes such as 768x768,896x640; got {entry!r}")
        width, height = int(match.group(1)), int(match.group(2))
        multiple = picture_multiple(family)
        if width <= 0 or height <= 0 or width % multiple or height % multiple:
            raise ValueError(f"shape {entry.strip()!r} must have positive sides that are multiples of {multiple}")
        shapes.append((width, height))
    return tuple(dict.fromkeys(shapes))


def fit_to_bucket(image: Image.Image, buckets: tuple[tuple[int, int], ...]) -> Image.Image:
    """Resize (LANCZOS) to the bucket whose aspect ratio is nearest the picture's (in log ratio, so 2:1 and 1:2 are
    as far from 1:1). The shape changes by at most the buckets' spacing; the edit is restored to the input's size
    afterwards (`restore_size`). Returns `image` itself when it already has that size."""
    ratio = math.log(image.width / image.height)
    size = min(buckets, key=lambda shape: (abs(math.log(shape[0] / shape[1]) - ratio), -shape[0] * shape[1]))
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def restore_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize an edit back to the input's original ``size`` (width, height), LANCZOS."""
    if image.size == tuple(size):
        return image
    return image.resize(tuple(size), Image.Resampling.LANCZOS)


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes of ``image`` (no metadata is carried over). zlib level 1 encodes 3-4x faster than Pillow's
    default 6 for 5-10% more bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB ``image`` (4:4:4 chroma at quality >= 90, so edges of an edit stay sharp)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buffer.getvalue()


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff", "AVIF": "avif",
               "MPO": "jpg"}


def image_extension(data: bytes) -> str:
    """The file extension of encoded picture bytes, from their header (``jpg``, ``png``, ``webp``...).
    Raises ImageDecodeError for bytes that are not a readable picture."""
    try:
        with Image.open(io.BytesIO(data), formats=_readable_formats()) as image:
            return _EXTENSIONS.get(image.format, (image.format or "bin").lower())
    except Exception as exc:  # noqa: BLE001 - see decode_image
        raise ImageDecodeError(f"not an image: {exc}") from exc


_ORIENTATION = 0x0112  # the EXIF tag; 1 is upright, 2-8 flip and/or rotate on display


def upright_image_bytes(data: bytes, max_pixels: int = 40_000_000) -> tuple[bytes, str]:
    """Picture bytes whose stored pixels are upright, and their extension: ``data`` itself when it has no EXIF
    orientation to apply, else a PNG of the pixels as ``decode_image`` orients them (as the edit is). A reader
    that ignores EXIF (most training loaders) then sees the source the way it sees the edit, not sideways.
    Raises ImageDecodeError for bytes that are not a readable picture."""
    extension = image_extension(data)
    try:
        with Image.open(io.BytesIO(data), formats=_readable_formats()) as image:
            orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: decode_image ignores it too
        orientation = 1
    if orientation in (None, 1) or not isinstance(orientation, int):
        return data, extension
    return encode_png(decode_image(data, max_pixels), compress_level=6), "png"


def _mask_2d(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim > 2 and math.prod(mask.shape[:-2]) == 1:
        mask = mask.reshape(mask.shape[-2:])
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    return mask


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean (height, width) of a mask at latent resolution, upsampled nearest-neighbour to ``size`` (w, h).

    The one upsampling of a mask: the written mask PNG and the background metrics both see this one. Leading
    size-1 axes are dropped.
    """
    binary = Image.fromarray((_mask_2d(mask) > 0).astype(np.uint8) * 255, "L")
    return np.asarray(binary.resize(tuple(size), Image.Resampling.NEAREST)) > 0


def mask_to_png(mask: np.ndarray, size: tuple[int, int], compress_level: int = 1) -> bytes:
    """Grayscale PNG (0 or 255) of a {0, 1} mask at latent resolution, upscaled to ``size`` (w, h)."""
    return encode_png(Image.fromarray(upsample_mask(mask, size).astype(np.uint8) * 255, "L"), compress_level)


def mask_coverage(mask: np.ndarray) -> float:
    """Fraction of the mask that is set (non-zero), in [0, 1]; 0.0 for an empty mask."""
    mask = np.asarray(mask)
    return float(np.count_nonzero(mask) / mask.size) if mask.size else 0.0
