"""Write: each edited row's outputs at the input's original size, and its background metrics (CPU tasks).

For the `files` output format the edit and the mask are written here, as PNGs. For the shard formats they are
encoded here and travel on to the commit stage, which puts a batch of them in one shard. The records come after,
in the commit stage, so no record names a missing file.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
from PIL import Image

from diffedit_batch.config import Config, OutputConfig
from diffedit_batch.data.images import (
    ImageDecodeError,
    decode_image,
    encode_jpeg,
    encode_png,
    mask_coverage,
    restore_size,
    upright_image_bytes,
)
from diffedit_batch.data.inputs import read_source_image
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.metrics import background_metrics
from diffedit_batch.data.regions import final_mask, paste_background
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, write_bytes_atomic

from ..rows import error_text, failed, require, to_table
from .spec import Stage

log = logging.getLogger(__name__)

READS = ("status", "edit_id", "width", "height", "model_width", "model_height", "pixels", "edited", "mask",
         "mask_width", "mask_height", "source_image_uri", "region")
ADDS = ("image_uri", "mask_uri", "write_s", "background_psnr", "background_ssim", "status", "error", "error_class",
        "pixels", "edited", "mask", "encoded_edit", "encoded_edit_ext", "encoded_mask", "encoded_source",
        "encoded_source_ext", "write_cpu_s", "mask_coverage", "region", "source_image_bytes")


def write_outputs(
    batch: pa.Table, *, output_prefix: str, options: StorageOptions, output: OutputConfig = OutputConfig(),
    background_metrics: bool = True, max_image_pixels: int = 40_000_000,
) -> pa.Table:
    """Each edited row's outputs: written (`files`) or encoded for its shard; the rows leave without their
    model-size pixel payloads.

    With `background_metrics`, each edit's background PSNR/SSIM (diffedit_batch.data.metrics) is computed from
    the model-resolution input and edit, the last stage that holds both. An output that cannot be written (or a
    source that can no longer be read for a shard) makes its row a storage error.
    """
    require(batch, READS, "write")
    cpu_started = time.process_time()
    layout = OutputLayout(output_prefix)
    out = []
    for row in batch.to_pylist():
        # pending: an edit to write; filtered with its edit still on: a candidate not kept, written on request
        if row["status"] == Status.PENDING or (row["status"] == Status.FILTERED and row.get("edited")):
            row = _write_one(row, layout, options, output, background_metrics, max_image_pixels)
        out.append({**row, "pixels": None, "edited": None, "mask": None, "region": None, "source_image_bytes": None})
    cpu = (time.process_time() - cpu_started) / max(1, len(out))
    for row in out:
        row["write_cpu_s"] = cpu
    return to_table(out)


def _write_one(row: dict, layout: OutputLayout, options: StorageOptions, output: OutputConfig,
               with_metrics: bool, max_pixels: int) -> dict:
    started = time.perf_counter()
    size = (row["width"], row["height"])
    model_size = (row["model_width"], row["model_height"])
    model_edit = Image.frombytes("RGB", model_size, row["edited"])
    edited = restore_size(model_edit, size)
    mask = np.frombuffer(row["mask"], np.uint8).reshape(row["mask_height"], row["mask_width"])
    if with_metrics and row.get("pixels") and row.get("background_psnr") is None:  # candidates come scored
        model_input = np.frombuffer(row["pixels"], np.uint8).reshape(model_size[1], model_size[0], 3)
        try:
            psnr, ssim = background_metrics(model_input, np.asarray(model_edit), mask)
            row.update(background_psnr=psnr, background_ssim=ssim)
        except ValueError as error:  # a metric must not fail a finished edit: it stays null
            log.warning("no background metrics for %r: %s", row["edit_id"], error)
    # The final mask at the picture's size: the engine's (at latent size, the region applied there) upsampled, and
    # the region again at picture size. It is the written mask, its coverage the record's, and with
    # paste_background the written picture is the input's own pixels wherever it is 0.
    final = final_mask(mask, size, row.get("region"))
    row["mask_coverage"] = mask_coverage(final)
    mask_png = encode_png(Image.fromarray(final.astype(np.uint8) * 255, "L"), output.png_compress_level)
    if output.paste_background:
        try:
            # an embedded picture (a Parquet row's bytes, a shard's member) is read again by its locator
            data = row.get("source_image_bytes") or read_source_image(row["source_image_uri"], options)
            source = decode_image(data, max_pixels=max_pixels)
        except (StorageError, ImageDecodeError) as error:
            return failed(row, ErrorClass.STORAGE, f"cannot read the source picture again to paste its background: "
                                                   f"{error}")
        except Exception as error:  # noqa: BLE001 - any client's failure on one URI is that row's error
            return failed(row, ErrorClass.STORAGE, f"cannot read the source picture again to paste its background: "
                                                   f"{error_text(error)}")
        if source.size != edited.size:
            return failed(row, ErrorClass.IMAGE_DECODE, f"the source picture is {source.size[0]}x{source.size[1]} "
                                                        f"now, {edited.size[0]}x{edited.size[1]} when it was edited")
        edited = Image.fromarray(paste_background(np.asarray(edited), np.asarray(source), final, output.feather_px))
    if output.sharded:
        return _encode_for_shard(row, edited, mask_png, options, output, started, max_pixels)
    image_uri = layout.image(row["edit_id"], row.get("output_tag"))
    mask_uri = layout.mask(row["edit_id"], row.get("output_tag"))
    try:
        write_bytes_atomic(image_uri, encode_png(edited, output.png_compress_level), options)
        write_bytes_atomic(mask_uri, mask_png, options)
    except StorageError as error:
        return failed(row, ErrorClass.STORAGE, f"cannot write outputs: {error}")
    status = Status.OK if row["status"] == Status.PENDING else row["status"]
    return {**row, "status": status, "image_uri": image_uri, "mask_uri": mask_uri,
            "write_s": time.perf_counter() - started}


def _encode_for_shard(row: dict, edited: Image.Image, mask_png: bytes, options: StorageOptions,
                      output: OutputConfig, started: float, max_pixels: int) -> dict:
    if output.image_format == "jpg":
        row.update(encoded_edit=encode_jpeg(edited, output.jpeg_quality), encoded_edit_ext="jpg")
    else:
        row.update(encoded_edit=encode_png(edited, output.png_compress_level), encoded_edit_ext="png")
    row["encoded_mask"] = mask_png
    if output.include_source:
        # The picture's own bytes, as the shard's training pair: read again rather than carried through the GPU
        # stage, where a row travels at model size. Re-encoded only when EXIF rotates it, so that it stands upright
        # beside its edit for readers that ignore EXIF.
        try:
            data = row.get("source_image_bytes") or read_source_image(row["source_image_uri"], options)
            source, extension = upright_image_bytes(data, max_pixels)
            row.update(encoded_source=source, encoded_source_ext=extension)
        except (StorageError, ImageDecodeError) as error:
            return failed(row, ErrorClass.STORAGE, f"cannot read the source picture again for its shard: {error}")
    row["write_s"] = time.perf_counter() - started
    return row


def write_stage(config: Config, output_prefix: str) -> Stage:
    return Stage(
        name="write", run=write_outputs, reads=READS, adds=ADDS, cpus=config.job.write_cpus,
        batch_size=config.job.batch_size,
        kwargs={"output_prefix": output_prefix, "options": config.storage, "output": config.output,
                "background_metrics": config.metrics.background, "max_image_pixels": config.job.max_image_pixels},
    )
