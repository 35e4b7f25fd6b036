"""Fetch: read and decode each pending row's picture (RGB, EXIF orientation applied), resize it for the model."""

from __future__ import annotations

import time

import pyarrow as pa

from diffedit_batch.config import Config
from diffedit_batch.data.images import (ImageDecodeError, decode_image, fit_to_bucket, fit_to_resolution, parse_buckets,
                                        picture_multiple)
from diffedit_batch.data.regions import editable_area, pack, region_mask_array
from diffedit_batch.data.sources import source_digest, source_identity
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, read_bytes, redact_uri

from ..rows import error_text, require, to_table
from .spec import Stage

READS = ("status", "source_image_uri", "region_boxes", "region_mask_uri", "region_mask")
ADDS = ("source_image_bytes", "width", "height", "model_width", "model_height", "pixels", "fetch_s", "status", "error",
        "error_class", "fetch_cpu_s", "region", "region_mask", "source_identity", "source_digest")


# The last picture this worker fetched: the targets of a manifest row sit next to each other in the work list, so
# the next batch often starts with the picture the last one ended with. One picture, per process.
_last: tuple[tuple, dict] | None = None


def fetch_images(batch: pa.Table, *, options: StorageOptions, resolution: int, max_pixels: int,
                 aspect_buckets: str = "off", family: str | None = None, region_mode: str = "inside",
                 grow_px: int = 0, keep_source: bool = False) -> pa.Table:
    """Add each pending row's original size (`width`, `height`) and its model input (`model_width`,
    `model_height`, `pixels`: RGB bytes); a row whose picture cannot be read or decoded becomes an error row.

    The model input keeps the picture's aspect ratio (longer side `resolution`), or with `aspect_buckets` is the
    nearest bucket shape (`data.images.parse_buckets`; `auto` on an SDXL model (`family`): SDXL's training shapes;
    on SD3 and FLUX.1: multiples of 16 px around one megapixel). Sides are multiples of 8 px (16 on SD3 and FLUX.1).
    Rows of one picture (a manifest row's targets, next to
    each other) share one read and one decode, even across batches, and each carries its share of the time.
    A row that comes with its picture's bytes (`source_image_bytes`: an input that embeds them) is not read again;
    the bytes travel on only with `keep_source` (a shard holds the source picture), else they are dropped here.
    """
    global _last
    require(batch, READS, "fetch")
    cpu_started = time.process_time()
    buckets = parse_buckets(aspect_buckets, resolution, family)
    rows = batch.to_pylist()
    sharing: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == Status.PENDING:
            sharing.setdefault(row["source_image_uri"], []).append(row)
    for uri, group in sharing.items():
        key = (uri, options, resolution, max_pixels, buckets, family)
        if _last is not None and _last[0] == key:
            fetched = {**_last[1], "fetch_s": 0.0}
        else:
            embedded = next((row["source_image_bytes"] for row in group if row.get("source_image_bytes")), None)
            fetched = _fetch_one(uri, options, resolution, max_pixels, buckets, picture_multiple(family), embedded)
            _last = (key, dict(fetched))
        if "fetch_s" in fetched:
            fetched["fetch_s"] /= len(group)  # each row's share, as edit_s is a batch's time per row
        for row in group:
            row.update(fetched)
            if row["status"] == Status.PENDING:
                _add_region(row, options, max_pixels, region_mode, grow_px)
    cpu = (time.process_time() - cpu_started) / max(1, len(rows))
    for row in rows:
        row["fetch_cpu_s"] = cpu
        if not keep_source or row["status"] != Status.PENDING:
            row["source_image_bytes"] = None
    return to_table(rows)


def _fetch_one(uri: str, options: StorageOptions, resolution: int, max_pixels: int,
               buckets: tuple[tuple[int, int], ...] | None = None, multiple: int = 8,
               embedded: bytes | None = None) -> dict:
    """What fetching `uri` (or decoding the `embedded` bytes the input row came with) adds to a row: its picture,
    or an error status and message."""
    started = time.perf_counter()
    try:
        # Its identity first: a picture replaced between the two reads then looks changed to the next run, which
        # edits it again, never the other way round. An embedded picture's identity is its file's or shard's.
        identity = source_identity(uri, options)
        data = embedded if embedded is not None else read_bytes(uri, options)
    except StorageError as error:
        return _error(ErrorClass.STORAGE, f"cannot read image: {error}")
    except Exception as error:  # any client's failure on one URI is that row's error, not the job's
        return _error(ErrorClass.STORAGE, f"cannot read image {redact_uri(uri)}: {error_text(error)}")
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return _error(ErrorClass.IMAGE_DECODE, str(error))
    model_input = fit_to_resolution(image, resolution, multiple) if buckets is None else fit_to_bucket(image, buckets)
    return {
        "width": image.width,
        "height": image.height,
        "model_width": model_input.width,
        "model_height": model_input.height,
        "pixels": model_input.tobytes(),
        "fetch_s": time.perf_counter() - started,
        "source_identity": identity,
        "source_digest": source_digest(data),
    }


def _add_region(row: dict, options: StorageOptions, max_pixels: int, mode: str, grow_px: int) -> None:
    """The row's editable area at its picture's size (`region`, packed bits) from its boxes and region mask, or
    nothing when it has neither (null boxes; an empty box list is an empty region) or the area is the whole picture;
    a region mask that cannot be read makes the row an error."""
    boxes, uri, data = row.get("region_boxes"), row.get("region_mask_uri"), row.get("region_mask")
    row["region_mask"] = None  # used here only
    if boxes is None and uri is None and data is None:
        return
    width, height = row["width"], row["height"]
    mask = None
    if uri is not None or data is not None:
        try:
            data = data if data is not None else read_bytes(uri, options)
        except StorageError as error:
            row.update(_error(ErrorClass.STORAGE, f"cannot read region_mask: {error}"))
            return
        except Exception as error:  # any client's failure on one URI is that row's error, as for the picture
            row.update(_error(ErrorClass.STORAGE, f"cannot read region_mask {redact_uri(uri)}: {error_text(error)}"))
            return
        try:
            mask = region_mask_array(data, width, height, max_pixels)
        except ValueError as error:
            row.update(_error(ErrorClass.IMAGE_DECODE, str(error)))
            return
    area = editable_area(width, height, boxes=boxes or [], mask=mask, mode=mode, grow_px=grow_px)
    if not area.all():  # one that keeps nothing is no constraint (e.g. outside an empty box list)
        row["region"] = pack(area)


def _error(error_class: str, message: str) -> dict:
    return {"status": Status.ERROR, "error_class": error_class, "error": message}


def fetch_stage(config: Config) -> Stage:
    return Stage(
        name="fetch", run=fetch_images, reads=READS, adds=ADDS, cpus=config.job.decode_cpus,
        batch_size=config.job.batch_size,
        kwargs={"options": config.storage, "resolution": config.model.resolution,
                "max_pixels": config.job.max_image_pixels, "aspect_buckets": config.model.aspect_buckets,
                "family": config.model.family, "region_mode": config.region.mode,
                "grow_px": config.region.grow_px,
                "keep_source": config.output.sharded and config.output.include_source},
    )
