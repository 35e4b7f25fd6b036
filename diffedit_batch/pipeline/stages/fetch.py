"""Fetch: read and decode each pending row's picture (RGB, EXIF orientation applied), resize it for the model."""

from __future__ import annotations

import time

import pyarrow as pa

from diffedit_batch.config import Config
from diffedit_batch.data.images import ImageDecodeError, decode_image, fit_to_resolution
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, read_bytes, redact_uri

from ..rows import error_text, require, to_table
from .spec import Stage

READS = ("status", "source_image_uri")
ADDS = ("width", "height", "model_width", "model_height", "pixels", "fetch_s", "status", "error", "error_class")


def fetch_images(batch: pa.Table, *, options: StorageOptions, resolution: int, max_pixels: int) -> pa.Table:
    """Add each pending row's original size (`width`, `height`) and its model input (`model_width`,
    `model_height`, `pixels`: RGB bytes); a row whose picture cannot be read or decoded becomes an error row.

    Rows of one picture in a batch (the targets of a row sit next to each other) share one read and one decode,
    and each carries its share of the time.
    """
    require(batch, READS, "fetch")
    rows = batch.to_pylist()
    sharing: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == Status.PENDING:
            sharing.setdefault(row["source_image_uri"], []).append(row)
    for uri, group in sharing.items():
        fetched = _fetch_one(uri, options, resolution, max_pixels)
        if "fetch_s" in fetched:
            fetched["fetch_s"] /= len(group)  # each row's share, as edit_s is a batch's time per row
        for row in group:
            row.update(fetched)
    return to_table(rows)


def _fetch_one(uri: str, options: StorageOptions, resolution: int, max_pixels: int) -> dict:
    """What fetching `uri` adds to a row: its picture, or an error status and message."""
    started = time.perf_counter()
    try:
        data = read_bytes(uri, options)
    except StorageError as error:
        return _error(ErrorClass.STORAGE, f"cannot read image: {error}")
    except (OSError, ValueError) as error:
        return _error(ErrorClass.STORAGE, f"cannot read image {redact_uri(uri)}: {error_text(error)}")
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return _error(ErrorClass.IMAGE_DECODE, str(error))
    model_input = fit_to_resolution(image, resolution)
    return {
        "width": image.width,
        "height": image.height,
        "model_width": model_input.width,
        "model_height": model_input.height,
        "pixels": model_input.tobytes(),
        "fetch_s": time.perf_counter() - started,
    }


def _error(error_class: str, message: str) -> dict:
    return {"status": Status.ERROR, "error_class": error_class, "error": message}


def fetch_stage(config: Config) -> Stage:
    return Stage(
        name="fetch", run=fetch_images, reads=READS, adds=ADDS, cpus=config.job.decode_cpus,
        batch_size=config.job.batch_size,
        kwargs={"options": config.storage, "resolution": config.model.resolution,
                "max_pixels": config.job.max_image_pixels},
    )
