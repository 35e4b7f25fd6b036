"""Regions: the part of a picture an edit must keep to (`region.mode: inside`) or keep out of (`outside`), from the
manifest's `region_boxes` ([x, y, w, h] in pixels, COCO order) and `region_mask` (a grayscale picture, white = the
region), and what the final mask does to the written picture (`output.paste_background`). Numpy, no torch or Ray.

Regions apply at the picture's own size: boxes are rounded outward to whole pixels and clipped to the picture, a
region mask of another size is resized nearest-neighbour, `region.grow_px` grows the region by a square. DiffEdit's
mask lives at latent size (a cell is 8x8 model pixels); there a cell that touches a pixel to keep is kept
(`latent_constraint`), so the final mask at picture size never reaches into the kept part.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["RegionProblem", "boxes_from_column", "editable_area", "final_mask", "grow", "latent_constraint", "pack",
           "parse_boxes", "paste_background", "region_mask_array", "unpack"]


class RegionProblem(ValueError):
    """A row's region cannot be used (a box of negative size, boxes that are not [x, y, w, h]): its invalid_row."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_boxes(value: Any, where: str = "region_boxes") -> list[list[float]]:
    """`value` (a list of [x, y, w, h], or null) as a list of boxes; raises RegionProblem naming `where` for a box that
    is not four finite numbers or has a negative width or height."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise RegionProblem(f"{where} must be a list of [x, y, w, h] boxes, got {type(value).__name__}")
    boxes = []
    for k, box in enumerate(value):
        box = list(box) if box is not None and not isinstance(box, (str, bytes)) and hasattr(box, "__iter__") else box
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise RegionProblem(f"{where}[{k}] must be four numbers [x, y, w, h], got {box!r}")
        if box[2] < 0 or box[3] < 0:
            raise RegionProblem(f"{where}[{k}] {box!r} has a negative size (w and h must be >= 0)")
        boxes.append([float(v) for v in box])
    return boxes


def boxes_from_column(value: Any, field: str, where: str) -> list[list[float]]:
    """The boxes at `field` of a column's value: a struct of lists (`{"bbox": [[...], ...], ...}`, as `datasets`
    writes a Sequence of dicts) or a list of structs (`[{"bbox": [...]}, ...]`); null is no boxes."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return parse_boxes(value.get(field), where)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise RegionProblem(f"{where} must be a struct of lists or a list of structs, got {type(value).__name__}")
    boxes = []
    for k, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise RegionProblem(f"{where}[{k}] must be a struct with {field!r}, got {type(item).__name__}")
        boxes += parse_boxes([item.get(field)] if item.get(field) is not None else [], f"{where}[{k}]")
    return boxes


def region_mask_array(data: bytes, width: int, height: int, max_pixels: int | None = None) -> np.ndarray:
    """A region mask picture (any mode; white = the region, >= 128 after conversion to grayscale) as a boolean
    (height, width) array; one of another size is resized nearest-neighbour. Raises ValueError when it cannot be
    decoded, or when it has more than `max_pixels` pixels (`job.max_image_pixels`, as the picture itself: checked
    from its header, before it is decoded)."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - any decoder failure is the row's bad region mask
        raise ValueError(f"region_mask is not a readable picture: {error}") from None
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ValueError(f"region_mask is {image.width}x{image.height} px, more than job.max_image_pixels "
                         f"({max_pixels}); give a region mask of the picture's size")
    try:
        image.load()
        gray = image.convert("L")
    except Exception as error:  # noqa: BLE001 - any decoder failure is the row's bad region mask
        raise ValueError(f"region_mask is not a readable picture: {error}") from None
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(gray) >= 128


def _box_area(boxes: list[list[float]], width: int, height: int) -> np.ndarray:
    area = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        # clipped as floats first: a far edge of finite numbers may still be inf (x + w past the float range)
        x0, y0 = math.floor(min(max(x, 0.0), width)), math.floor(min(max(y, 0.0), height))
        x1, y1 = math.ceil(min(max(x + w, 0.0), width)), math.ceil(min(max(y + h, 0.0), height))
        if x1 > x0 and y1 > y0:
            area[y0:y1, x0:x1] = True
    return area


def _window_sum(array: np.ndarray, radius_y: int, radius_x: int) -> np.ndarray:
    """For each pixel, the sum of `array` over the window of +-radius around it (clipped at the borders)."""
    integral = np.pad(array.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = array.shape
    ys, xs = np.arange(height), np.arange(width)
    y0, y1 = np.clip(ys - radius_y, 0, height), np.clip(ys + radius_y + 1, 0, height)
    x0, x1 = np.clip(xs - radius_x, 0, width), np.clip(xs + radius_x + 1, 0, width)
    return (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])


def grow(region: np.ndarray, pixels: int) -> np.ndarray:
    """`region` grown by `pixels` in every direction (a square of side 2 * pixels + 1)."""
    if pixels <= 0 or not region.any():
        return region
    return _window_sum(region, pixels, pixels) > 0


def editable_area(width: int, height: int, *, boxes: list[list[float]] = (), mask: np.ndarray | None = None,
                  mode: str = "inside", grow_px: int = 0) -> np.ndarray:
    """Where the edit may change the picture, boolean (height, width): the region (boxes and mask together, grown by
    `grow_px`) with `mode` inside, everything else with `outside`."""
    region = _box_area(list(boxes), width, height)
    if mask is not None:
        region |= mask
    region = grow(region, grow_px)
    return region if mode == "inside" else ~region


def latent_constraint(editable: np.ndarray, latent_height: int, latent_width: int) -> np.ndarray:
    """The (latent_height, latent_width) uint8 constraint of an editable area at picture size: a cell is 1 only
    when none of the picture pixels it covers (its rectangle rounded outward) is to be kept."""
    height, width = editable.shape
    keep = np.pad((~editable).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows, cols = np.arange(latent_height), np.arange(latent_width)
    y0 = np.floor(rows * height / latent_height).astype(int)
    y1 = np.minimum(height, np.ceil((rows + 1) * height / latent_height).astype(int))
    x0 = np.floor(cols * width / latent_width).astype(int)
    x1 = np.minimum(width, np.ceil((cols + 1) * width / latent_width).astype(int))
    kept = keep[y1][:, x1] - keep[y0][:, x1] - keep[y1][:, x0] + keep[y0][:, x0]
    return (kept == 0).astype(np.uint8)


def final_mask(mask: np.ndarray, size: tuple[int, int], region: bytes | None = None) -> np.ndarray:
    """The final binary mask at the picture's `size` (width, height): the engine's mask at latent size upsampled
    nearest-neighbour (`images.upsample_mask`), AND the editable area (`pack`ed) when the edit has a region. The
    written mask, and the one `mask_coverage` measures."""
    from .images import upsample_mask

    final = upsample_mask(mask, size)
    if region:
        final &= unpack(region, *size)
    return final


def pack(area: np.ndarray) -> bytes:
    """A boolean picture-size area as bits (a work-row column: 1/8 byte a pixel)."""
    return np.packbits(np.ascontiguousarray(area, bool)).tobytes()


def unpack(data: bytes, width: int, height: int) -> np.ndarray:
    """The boolean (height, width) area of `pack`."""
    return np.unpackbits(np.frombuffer(data, np.uint8), count=width * height).reshape(height, width).astype(bool)


def paste_background(edited: np.ndarray, source: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
    """The written picture: `source`'s own pixels wherever `mask` (boolean, picture size) is 0, `edited`'s inside it;
    with `feather_px`, the edit fades in over that many pixels from the mask's edge, inside the mask only (a pixel
    at Chebyshev distance d from the kept part takes min(d, feather_px) / feather_px of the edit). uint8 (H, W, 3)."""
    mask = np.asarray(mask, bool)
    if feather_px <= 0:
        return np.where(mask[..., None], edited, source).astype(np.uint8)
    # alpha = min(d, F) / F, d the distance to the nearest kept pixel: the count of erosions by 0..F-1 a pixel survives
    kept = (~mask).astype(np.int64)
    alpha = mask.astype(np.float32)
    # From a radius of the picture's longer side on, a window covers the whole picture: a pixel survives every
    # erosion or none (none kept anywhere), so those radii are counted at once, whatever feather_px.
    last = min(feather_px, max(mask.shape))
    for radius in range(1, last):
        alpha += (_window_sum(kept, radius, radius) == 0) & mask
    if feather_px > last and not kept.any():
        alpha += (feather_px - last) * mask
    alpha /= feather_px
    blended = source.astype(np.float32) + alpha[..., None] * (edited.astype(np.float32) - source.astype(np.float32))
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[~mask] = source[~mask]
    return out
