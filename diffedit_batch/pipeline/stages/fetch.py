"""Fetch: read and decode each pending row's picture (RGB, EXIF orientation applied), resize it for the model."""

from __future__ import annotations

import time

import pyarrow as pa

from diffedit_batch.data.images import ImageDecodeError, decode_image, fit_to_resolution
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, read_bytes, redact_uri

from ..rows import error_text, failed, to_table


def fetch_images(batch: pa.Table, *, options: StorageOptions, resolution: int, max_pixels: int) -> pa.Table:
    """Add each pending row's original size (`width`, `height`) and its model input (`model_width`,
    `model_height`, `pixels`: RGB bytes); a row whose picture cannot be read or decoded becomes an error row."""
    out = []
    for row in batch.to_pylist():
        if row["status"] == Status.PENDING:
            row = _fetch_one(row, options, resolution, max_pixels)
        out.append(row)
    return to_table(out)


def _fetch_one(row: dict, options: StorageOptions, resolution: int, max_pixels: int) -> dict:
    started = time.perf_counter()
    uri = row["source_image_uri"]
    try:
        data = read_bytes(uri, options)
    except StorageError as error:
        return failed(row, ErrorClass.STORAGE, f"cannot read image: {error}")
    except (OSError, ValueError) as error:
        return failed(row, ErrorClass.STORAGE, f"cannot read image {redact_uri(uri)}: {error_text(error)}")
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return failed(row, ErrorClass.IMAGE_DECODE, str(error))
    model_input = fit_to_resolution(image, resolution)
    row.update(
        width=image.width,
        height=image.height,
        model_width=model_input.width,
        model_height=model_input.height,
        pixels=model_input.tobytes(),
        fetch_s=time.perf_counter() - started,
    )
    return row
