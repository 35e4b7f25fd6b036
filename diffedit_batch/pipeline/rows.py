"""The rows that flow between the job's stages: one edit, filled in stage by stage, and its summary.

One explicit Arrow schema for every stage's output, so blocks whose optional columns happen to be all null
still agree with blocks where they are set. A name means one thing end to end: the work row's names are the
result record's (`source_image_uri` is the input, `image_uri` the edit, `width`/`height` the input's original
size); what only travels (the model-size picture, the raw edit and mask) has names of its own.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from diffedit_batch.data.status import Status

WORK_SCHEMA = pa.schema(
    [
        # the request (diffedit_batch.data.manifest.EditRequest)
        pa.field("edit_id", pa.string()),
        pa.field("row_id", pa.string()),
        pa.field("source_image_uri", pa.string()),
        pa.field("source_prompt", pa.string()),
        pa.field("target_prompt", pa.string()),
        pa.field("inversion_prompt", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("source_concept", pa.string()),
        pa.field("target_concept", pa.string()),
        pa.field("target_index", pa.int32()),
        pa.field("caption", pa.string()),  # the BLIP caption, when one was made
        # where it stands (diffedit_batch.data.status)
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("error_class", pa.string()),
        # the fetched picture: its original size, and the model's input (RGB bytes, row-major)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_width", pa.int32()),
        pa.field("model_height", pa.int32()),
        pa.field("pixels", pa.binary()),
        pa.field("fetch_s", pa.float64()),
        # the edit (RGB bytes at model size; mask uint8 {0, 1} at mask_height x mask_width)
        pa.field("edited", pa.binary()),
        pa.field("mask", pa.binary()),
        pa.field("mask_width", pa.int32()),
        pa.field("mask_height", pa.int32()),
        pa.field("mask_coverage", pa.float64()),
        pa.field("prompt_truncated", pa.bool_()),
        pa.field("edit_s", pa.float64()),
        # the edit actor's idle time before this row's batch arrived (its share): the data path starving it
        pa.field("actor_wait_s", pa.float64()),
        pa.field("node_id", pa.string()),  # the Ray node of the edit actor that handled the row
    ]
)

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("edit_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error_class", pa.string()),
        pa.field("edit_s", pa.float64()),
        # the edit actor's idle time before this row's batch arrived (its share): the data path starving it
        pa.field("actor_wait_s", pa.float64()),
        # False when the block's record part could not be written: nothing was persisted for the row
        pa.field("recorded", pa.bool_()),
    ]
)


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = WORK_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def failed(row: dict[str, Any], error_class: str, message: str) -> dict[str, Any]:
    """Mark a row as an error record; bulky payloads are dropped so they stop travelling."""
    return {**row, "status": Status.ERROR, "error_class": error_class, "error": message, "pixels": None,
            "edited": None}


def error_text(error: BaseException, limit: int = 500) -> str:
    """`Type: message`, cut to `limit` characters: an exception as a record's `error`."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
