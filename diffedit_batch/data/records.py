"""Result records: one per edit, written after its outputs, as Parquet files under ``PREFIX/manifest``.

A record is the "done" marker: resuming a job is the manifest's edits minus the edits recorded ``ok``. The result
manifest is a plain Parquet dataset: every ``*.parquet`` under ``PREFIX/manifest/`` (any sub-folder; names that
start with ``.`` or ``_`` are temp files and skipped), written by this job or another tool with the same schema.
A run writes small parts as it goes; ``compaction`` merges them into few large files at its end. Where the files
live is ``layout.OutputLayout``'s; what a status means is ``status.Status``'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .layout import OutputLayout
from .metrics import METRIC_FIELDS
from .status import Status
from .storage import (
    StorageError,
    StorageOptions,
    list_file_infos,
    redact_text,
    redact_uri,
    resolve,
    write_bytes_atomic,
)

__all__ = [
    "RECORD_SCHEMA",
    "REPLACES_KEY",
    "RESULT_SCHEMA",
    "RecordFile",
    "RecordFiles",
    "conform_records",
    "extend_result_schema",
    "list_record_files",
    "parquet_bytes",
    "read_footer",
    "read_footers",
    "read_record_file",
    "record_files",
    "record_from_row",
    "records_to_table",
    "write_record_part",
]

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),  # the edit id; null only for a manifest row without an id
        pa.field("row_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # ok | error | duplicate | filtered (a candidate not kept)
        pa.field("error", pa.string()),
        # Short category: image_decode, invalid_row, storage, engine, duplicate_id, ...
        pa.field("error_class", pa.string()),
        pa.field("image_uri", pa.string()),
        pa.field("mask_uri", pa.string()),
        pa.field("source_image_uri", pa.string()),
        pa.field("source_prompt", pa.string()),
        pa.field("target_prompt", pa.string()),
        pa.field("inversion_prompt", pa.string()),
        # concepts expanded by Flan-T5 (their captions: PREFIX/concepts/), and the BLIP caption, if any
        pa.field("source_concept", pa.string()),
        pa.field("target_concept", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("prompt_truncated", pa.bool_()),
        pa.field("seed", pa.int64()),
        pa.field("mask_coverage", pa.float64()),
        pa.field("model_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fetch_s", pa.float64()),
        pa.field("edit_s", pa.float64()),
        pa.field("write_s", pa.float64()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # The Ray node whose edit actor handled the row; null when it never reached one (or ran without Ray).
        pa.field("node_id", pa.string()),
        # What made the edit (data.fingerprints): its request, and the settings that change pixels (the run files
        # hold the settings behind each). Null in records written before fingerprints existed.
        pa.field("request_fingerprint", pa.string()),
        pa.field("settings_fingerprint", pa.string()),
        # The picture the edit was made from, as storage identified it without reading it (data.sources: size and
        # mtime, an ETag) and the digest of the bytes that were read. Null in records written before they existed.
        pa.field("source_identity", pa.string()),
        pa.field("source_digest", pa.string()),
        # A candidate (several edits per request, `candidates.count`): its index, the settings it drew (JSON), and
        # why it was not kept (status filtered). Null for one edit per request.
        pa.field("candidate", pa.int32()),
        pa.field("candidate_settings", pa.string()),
        pa.field("filter_reason", pa.string()),
        # the row's class as text (augment.balance_by, else the label template's column; a ClassLabel's name)
        pa.field("class_name", pa.string()),
        # The input row the edit was made from (its id; `row_id` less nothing: kept apart so an export's source rows
        # and edits share one column), whether the picture is made (always true for a record: an export's source
        # rows are false), and the input's carried columns as stored, JSON {column: value} (`input.carry_columns`;
        # their types and ClassLabel names are in the run file's `input`).
        pa.field("source_id", pa.string()),
        pa.field("synthetic", pa.bool_()),
        pa.field("carried", pa.string()),
    ]
)


# --- building and writing ---------------------------------------------------------------------


def extend_result_schema(*fields: pa.Field, base: pa.Schema = RESULT_SCHEMA) -> pa.Schema:
    """``base`` plus extra columns (captions, metrics...), which must be new and nullable.

    Old parts without them stay readable: readers see nulls.
    """
    for field in fields:
        if field.name in base.names:
            raise ValueError(f"result column {field.name!r} already exists")
        if not field.nullable:
            raise ValueError(f"added result column {field.name!r} must be nullable")
        base = base.append(field)
    return base


def records_to_table(records: Sequence[dict], schema: pa.Schema = RESULT_SCHEMA) -> pa.Table:
    """A table of ``schema`` from record dicts; absent columns are null.

    ``finished_at`` defaults to now (UTC). Raises ValueError naming any key not in ``schema``
    and any unknown status.
    """
    known = set(schema.names)
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for i, record in enumerate(records):
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"record {i} has unknown fields: {', '.join(unknown)}")
        if record.get("status") not in Status.RECORDED:
            raise ValueError(f"record {i} has status {record.get('status')!r}, expected one of {sorted(Status.RECORDED)}")
        row = {name: record.get(name) for name in schema.names}
        if row.get("finished_at") is None and "finished_at" in known:
            row["finished_at"] = now
        # from_pylist does not enforce nullability; a null here would be a silent corrupt record.
        missing = [f.name for f in schema if not f.nullable and row[f.name] is None]
        if missing:
            raise ValueError(f"record {i} has no {', '.join(missing)}")
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


_PART_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


def write_record_part(
    prefix: str,
    records: Sequence[dict],
    options: StorageOptions | None = None,
    part_name: str = "0",
    schema: pa.Schema = RESULT_SCHEMA,
) -> str | None:
    """Write ``records`` atomically as ``PREFIX/manifest/part-<part_name>.parquet``; return its URI.

    Write it after the outputs it points at, so a record never names a missing file. Returns None
    and writes nothing for an empty list. ``part_name`` must be filename-safe and unique per part
    (e.g. run id + block index), or a part of this or an earlier run is replaced.
    """
    if not _PART_NAME.match(part_name):
        raise ValueError(f"part_name must match {_PART_NAME.pattern}, got {part_name!r}")
    if not records:
        return None
    uri = OutputLayout(prefix).record_part(part_name)
    write_bytes_atomic(uri, parquet_bytes(records_to_table(records, schema)), options)
    return uri


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """A table as the bytes of one zstd-compressed Parquet file (written atomically by the callers)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


RECORD_SCHEMA = extend_result_schema(*METRIC_FIELDS)
"""The records this job writes: the base columns and the quality metrics (null where not measured)."""


def candidate_id(edit_id: str, index: int) -> str:
    """A candidate's record id: the request's edit id and the candidate's index (`id~c2`), so outputs, resume and
    duplicates work per candidate."""
    return f"{edit_id}~c{index}"


def request_id_of(record_id: str | None, candidate: int | None) -> str | None:
    """The edit id of the request a record was made for: its own id, or a candidate's id (`candidate_id`) less the
    candidate's suffix (an id without its own candidate's suffix is taken as it is)."""
    suffix = f"~c{candidate}"
    if candidate is None or record_id is None or not record_id.endswith(suffix):
        return record_id
    return record_id[: -len(suffix)]


def record_from_row(row: dict, model_id: str, run_id: str) -> dict:
    """The result record of a work row (a row's names are the record's); outputs and metrics only when ok (or
    filtered: a candidate not kept keeps its scores). Credentials in the source URI or the error message (user
    info, signed-URL parameters) are redacted."""
    scored = row["status"] in Status.DONE  # a filtered candidate keeps its scores (and its outputs, if written)
    return {
        "id": row.get("edit_id"),
        "row_id": row.get("row_id"),
        "status": row["status"],
        "error": redact_text(row.get("error")),
        "error_class": row.get("error_class"),
        "image_uri": row.get("image_uri") if scored else None,
        "mask_uri": row.get("mask_uri") if scored else None,
        "source_image_uri": redact_uri(row.get("source_image_uri")),
        "source_prompt": row.get("source_prompt"),
        "target_prompt": row.get("target_prompt"),
        "inversion_prompt": row.get("inversion_prompt"),
        "source_concept": row.get("source_concept"),
        "target_concept": row.get("target_concept"),
        "caption": row.get("caption"),
        "prompt_truncated": row.get("prompt_truncated"),
        "seed": row.get("seed"),
        "mask_coverage": row.get("mask_coverage") if scored else None,
        **{f.name: row.get(f.name) if scored else None for f in METRIC_FIELDS},
        "model_id": model_id,
        "width": row.get("width"),
        "height": row.get("height"),
        "fetch_s": row.get("fetch_s"),
        "edit_s": row.get("edit_s"),
        "write_s": row.get("write_s"),
        "run_id": run_id,
        "node_id": row.get("node_id"),
        "request_fingerprint": row.get("request_fingerprint"),
        "settings_fingerprint": row.get("settings_fingerprint"),
        "source_identity": row.get("source_identity"),
        "source_digest": row.get("source_digest"),
        "candidate": row.get("candidate"),
        "candidate_settings": row.get("candidate_settings"),
        "filter_reason": row.get("filter_reason"),
        "class_name": row.get("class_name"),
        "source_id": row.get("row_id"),
        "synthetic": True,
        "carried": row.get("carried"),
    }


# --- reading ----------------------------------------------------------------------------------

# Footer key of a file written by compaction: the files (paths under PREFIX/manifest) whose records it holds. Once
# it exists those files are dead: readers skip them, the next compaction deletes them.
REPLACES_KEY = b"diffedit_batch.replaces"


@dataclass(frozen=True)
class RecordFile:
    """A record file: its URI, its size (from the listing, so reading it needs no extra request for the size), its
    path under ``PREFIX/manifest`` and, once its footer is read, its row count and the files it replaces."""

    uri: str
    size: int
    name: str
    rows: int | None = None
    replaces: tuple[str, ...] = ()


def record_files(prefix: str, options: StorageOptions | None = None) -> list[RecordFile]:
    """Every record file of the result manifest under ``prefix``, sorted by URI: one listing (a request per
    1,000 files on S3), no reads. Names that start with ``.`` or ``_`` (temp files, folders of work) are skipped."""
    folder = OutputLayout(prefix).records
    _, base = resolve(folder, options)
    files = []
    for info in list_file_infos(folder, ".parquet", options):
        name = resolve(info.uri, options)[1][len(base.rstrip("/")):].strip("/")
        if any(part.startswith((".", "_")) for part in name.split("/")):
            continue
        files.append(RecordFile(info.uri, info.size, name))
    return files


def _fragment(file: RecordFile, options: StorageOptions | None):
    """The file as a Parquet fragment of known size: pyarrow then makes no request for the size (a HEAD on S3)."""
    filesystem, path = resolve(file.uri, options)
    return pads.ParquetFileFormat().make_fragment(path, filesystem=filesystem, file_size=file.size)


def read_footer(file: RecordFile, options: StorageOptions | None = None) -> RecordFile:
    """``file`` with its row count and the files it replaces, read from its Parquet footer (one or two reads)."""
    try:
        fragment = _fragment(file, options)
        fragment.ensure_complete_metadata()
        metadata = fragment.metadata
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read record file {redact_uri(file.uri)}: {exc}") from exc
    replaces = ()
    raw = (metadata.metadata or {}).get(REPLACES_KEY)
    if raw:
        try:
            replaces = tuple(str(name) for name in json.loads(raw))
        except (ValueError, TypeError):
            replaces = ()  # not ours: another tool's key of the same name
    return dataclasses.replace(file, rows=metadata.num_rows, replaces=replaces)


def read_footers(
    files: Sequence[RecordFile], options: StorageOptions | None = None, threads: int = 32
) -> list[RecordFile]:
    """``read_footer`` of every file, in parallel threads (storage latency, not CPU, is the cost)."""
    if not files:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        return list(pool.map(lambda file: read_footer(file, options), files))


@dataclass(frozen=True)
class RecordFiles:
    """The record files under a prefix, footers read: ``live`` ones hold the result manifest; ``dead`` ones were
    merged into a live file by a compaction that stopped before deleting them (readers skip them)."""

    live: list[RecordFile]
    dead: list[RecordFile]


def list_record_files(prefix: str, options: StorageOptions | None = None, threads: int = 32) -> RecordFiles:
    """List the record files under ``prefix`` and read their footers: O(files) storage requests, in parallel."""
    files = read_footers(record_files(prefix, options), options, threads)
    replaced = {name for file in files for name in file.replaces}
    return RecordFiles(
        live=[file for file in files if file.name not in replaced],
        dead=[file for file in files if file.name in replaced],
    )


def conform_records(table: pa.Table, schema: pa.Schema = RECORD_SCHEMA) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: missing ones null (files from before a column existed),
    unknown ones dropped, types cast. Raises ArrowException for a column that cannot be cast."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_record_file(
    file: RecordFile, options: StorageOptions | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """The records of one file, only ``columns`` (default all of ``RECORD_SCHEMA``), conformed to the schema.

    The file's size is known, so no request asks for it; the footer and the column chunks it needs are read with
    pre-buffering, so a file costs few requests.
    Raises StorageError when it cannot be read or does not fit the result schema.
    """
    schema = RECORD_SCHEMA if columns is None else pa.schema([RECORD_SCHEMA.field(name) for name in columns])
    try:
        fragment = _fragment(file, options)
        present = [name for name in schema.names if name in fragment.physical_schema.names]
        table = fragment.to_table(columns=present)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read record file {redact_uri(file.uri)}: {exc}") from exc
    try:
        return conform_records(table, schema)
    except (pa.ArrowException, ValueError) as exc:
        raise StorageError(f"record file {redact_uri(file.uri)} does not fit the result schema: {exc}") from exc
