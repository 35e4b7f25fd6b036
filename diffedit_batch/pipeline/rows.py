"""The rows that flow between the job's stages: one edit, filled in stage by stage, and its summary.

Every stage reads and returns work rows of one explicit Arrow schema, `WORK_SCHEMA`, so blocks whose optional
columns happen to be all null still agree with blocks where they are set, and a key that is not in the schema is
an error (`to_table`), never silently dropped. A name means one thing end to end: the work row's names are the
result record's (`source_image_uri` is the input, `image_uri` the edit, `width`/`height` the input's original
size); what only travels (the model-size picture, the raw edit and mask) has names of its own. Each stage
declares which of these columns it reads and adds (`stages.spec.Stage`).
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from diffedit_batch.data.metrics import METRIC_FIELDS
from diffedit_batch.data.status import Status
from diffedit_batch.data.worklist import REQUEST_SCHEMA

WORK_SCHEMA = pa.schema(
    [
        # the request, as the run's plan left it (diffedit_batch.data.worklist), and where it stands
        *REQUEST_SCHEMA,
        # the picture's bytes when the input embeds it (Parquet bytes, a WebDataset member), read again for the edit
        # pass by row group or shard (stages.read.read_embedded_work); null: the fetch stage reads source_image_uri
        pa.field("source_image_bytes", pa.binary()),
        pa.field("caption", pa.string()),  # the BLIP caption, when one was made
        # a candidate of its request (candidates.count > 1): edit_id is then the candidate's id
        pa.field("candidate", pa.int32()),
        pa.field("candidate_settings", pa.string()),
        pa.field("filter_reason", pa.string()),
        # the fetched picture: its original size, and the model's input (RGB bytes, row-major)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_width", pa.int32()),
        pa.field("model_height", pa.int32()),
        pa.field("pixels", pa.binary()),
        pa.field("fetch_s", pa.float64()),
        # where the edit may change the picture, at its original size (data.regions.pack), when it has a region
        pa.field("region", pa.binary()),
        # what the picture was when it was read (data.sources): its storage identity and the digest of its bytes
        pa.field("source_identity", pa.string()),
        pa.field("source_digest", pa.string()),
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
        # the engine's work for an engine call (JSON counters, on the call's first row): data for the run file
        pa.field("engine_counts", pa.string()),
        # CPU seconds the row cost the fetch and write stages (its share of their batches)
        pa.field("fetch_cpu_s", pa.float64()),
        pa.field("write_cpu_s", pa.float64()),
        # quality metrics (background PSNR/SSIM in the write stage, CLIP scores in their own stage)
        *METRIC_FIELDS,
        # a sharded output's files, encoded by the write stage and put in a shard by the commit stage
        pa.field("encoded_edit", pa.binary()),
        pa.field("encoded_edit_ext", pa.string()),  # png or jpg
        pa.field("encoded_mask", pa.binary()),  # png
        pa.field("encoded_source", pa.binary()),  # the input picture's own bytes
        pa.field("encoded_source_ext", pa.string()),
        # the outputs, once written: files, or members of a shard (data.outputs)
        pa.field("image_uri", pa.string()),
        pa.field("mask_uri", pa.string()),
        pa.field("write_s", pa.float64()),
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
        # False when the row's record could not be written: nothing was persisted for it
        pa.field("recorded", pa.bool_()),
        # why it could not be written (recorded False), for the run's one line
        pa.field("record_error", pa.string()),
        pa.field("engine_counts", pa.string()),
        pa.field("fetch_cpu_s", pa.float64()),
        pa.field("write_cpu_s", pa.float64()),
    ]
)


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = WORK_SCHEMA) -> pa.Table:
    """Rows as a table of `schema`; a missing key is null, a key that is not in the schema raises KeyError."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise KeyError(f"keys {', '.join(sorted(unknown))} are not columns of the work row schema")
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


PAYLOADS = ("source_image_bytes", "pixels", "edited", "mask", "encoded_edit", "encoded_mask", "encoded_source", "region",
            "region_mask")
"""The bulky columns: pictures in flight, dropped as soon as a row no longer needs them."""


def failed(row: dict[str, Any], error_class: str, message: str) -> dict[str, Any]:
    """Mark a row as an error record; bulky payloads are dropped so they stop travelling."""
    return {**row, "status": Status.ERROR, "error_class": error_class, "error": message,
            **dict.fromkeys(PAYLOADS)}


def error_text(error: BaseException, limit: int = 500) -> str:
    """`Type: message`, cut to `limit` characters: an exception as a record's `error`."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def conform_work_rows(table: pa.Table) -> pa.Table:
    """`table`'s columns (a subset of the work row's, e.g. a work list's requests) as a work-row table: the other
    columns null. Raises KeyError for a column that is not in the work row."""
    unknown = sorted(set(table.column_names) - set(WORK_SCHEMA.names))
    if unknown:
        raise KeyError(f"columns {', '.join(unknown)} are not columns of the work row schema")
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in WORK_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=WORK_SCHEMA)


def require(batch: pa.Table, columns: Iterable[str], stage: str) -> None:
    """Raise KeyError naming the stage and every column in `columns` that `batch` lacks (its declared reads)."""
    missing = sorted(set(columns) - set(batch.schema.names))
    if missing:
        raise KeyError(f"stage {stage!r} needs columns {', '.join(missing)}")
