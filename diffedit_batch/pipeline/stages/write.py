"""Write: each edited row's PNGs, then the block's result records, so no record names a missing file."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import pyarrow as pa
from PIL import Image

from diffedit_batch.data.images import encode_png, mask_to_png, restore_size
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.metrics import METRIC_FIELDS, background_metrics
from diffedit_batch.data.records import extend_result_schema, write_record_part
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, write_bytes_atomic

from ..rows import SUMMARY_SCHEMA, failed, to_table

log = logging.getLogger(__name__)

RECORD_SCHEMA = extend_result_schema(*METRIC_FIELDS)  # the result records this job writes


def write_outputs(
    batch: pa.Table, *, output_prefix: str, options: StorageOptions, model_id: str, run_id: str,
    background_metrics: bool = True,
) -> pa.Table:
    """Write each edited row's PNGs, then the block's records; return one summary row per edit.

    With `background_metrics`, each edit's background PSNR/SSIM (diffedit_batch.data.metrics) is computed from
    the model-resolution input and edit, the last stage that holds both.
    """
    layout = OutputLayout(output_prefix)
    records = []
    summary = []
    for row in batch.to_pylist():
        if row["status"] == Status.PENDING:
            row = _write_one(row, layout, options, background_metrics)
        records.append(_record(row, model_id, run_id))
        summary.append({"edit_id": row["edit_id"], "status": records[-1]["status"],
                        "error_class": row.get("error_class"), "edit_s": row.get("edit_s"),
                        "actor_wait_s": row.get("actor_wait_s"),
                        "recorded": True})
    if records:
        try:
            write_record_part(output_prefix, records, options, part_name=_part_name(run_id, records),
                              schema=RECORD_SCHEMA)
        except StorageError as error:
            # Not a crash: the block's rows count as storage errors and, having no record, are retried by a re-run.
            log.warning("cannot write the records of %d edits: %s", len(records), error)
            for row in summary:
                row.update(status=Status.ERROR, error_class=ErrorClass.STORAGE, recorded=False)
    return to_table(summary, SUMMARY_SCHEMA)


def _write_one(row: dict, layout: OutputLayout, options: StorageOptions, with_metrics: bool = True) -> dict:
    started = time.perf_counter()
    size = (row["width"], row["height"])
    model_size = (row["model_width"], row["model_height"])
    model_edit = Image.frombytes("RGB", model_size, row["edited"])
    edited = restore_size(model_edit, size)
    mask = np.frombuffer(row["mask"], np.uint8).reshape(row["mask_height"], row["mask_width"])
    if with_metrics and row.get("pixels"):
        model_input = np.frombuffer(row["pixels"], np.uint8).reshape(model_size[1], model_size[0], 3)
        try:
            psnr, ssim = background_metrics(model_input, np.asarray(model_edit), mask)
            row.update(background_psnr=psnr, background_ssim=ssim)
        except ValueError as error:  # a metric must not fail a finished edit: it stays null
            log.warning("no background metrics for %r: %s", row["edit_id"], error)
    row["pixels"] = None
    image_uri = layout.image(row["edit_id"])
    mask_uri = layout.mask(row["edit_id"])
    try:
        write_bytes_atomic(image_uri, encode_png(edited), options)
        write_bytes_atomic(mask_uri, mask_to_png(mask, size), options)
    except StorageError as error:
        return failed(row, ErrorClass.STORAGE, f"cannot write outputs: {error}")
    return {**row, "status": Status.OK, "image_uri": image_uri, "mask_uri": mask_uri,
            "write_s": time.perf_counter() - started}


def _record(row: dict, model_id: str, run_id: str) -> dict:
    """The result record of a work row: the work row's names are the record's, outputs only when ok."""
    ok = row["status"] == Status.OK
    return {
        "id": row["edit_id"],
        "row_id": row["row_id"],
        "status": row["status"],
        "error": row.get("error"),
        "error_class": row.get("error_class"),
        "image_uri": row.get("image_uri") if ok else None,
        "mask_uri": row.get("mask_uri") if ok else None,
        "source_image_uri": row.get("source_image_uri"),
        "source_prompt": row.get("source_prompt"),
        "target_prompt": row.get("target_prompt"),
        "inversion_prompt": row.get("inversion_prompt"),
        "source_concept": row.get("source_concept"),
        "target_concept": row.get("target_concept"),
        "caption": row.get("caption"),
        "prompt_truncated": row.get("prompt_truncated"),
        "seed": row.get("seed"),
        "mask_coverage": row.get("mask_coverage") if ok else None,
        **{f.name: row.get(f.name) if ok else None for f in METRIC_FIELDS},
        "model_id": model_id,
        "width": row.get("width"),
        "height": row.get("height"),
        "fetch_s": row.get("fetch_s"),
        "edit_s": row.get("edit_s"),
        "write_s": row.get("write_s"),
        "run_id": run_id,
        "node_id": row.get("node_id"),
    }


def _part_name(run_id: str, records: list[dict]) -> str:
    """Deterministic per block: a retried write task replaces its own part instead of adding a second."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(repr((record["id"], record["row_id"], record["status"])).encode("utf-8", "surrogatepass"))
    return f"{run_id}-{digest.hexdigest()}"
