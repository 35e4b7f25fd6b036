"""Result records: one per edit, written after its outputs, in Parquet parts under ``PREFIX/manifest``.

A record is the "done" marker: resuming a job is the manifest's ids minus the ids recorded ``ok``. Where the
parts live is ``layout.OutputLayout``'s; what a status means is ``status.Status``'s.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import OutputLayout
from .status import Status
from .storage import StorageError, StorageOptions, delete, list_files, redact_uri, resolve, write_bytes_atomic

__all__ = [
    "RESULT_SCHEMA",
    "RecordIndex",
    "drop_superseded",
    "extend_result_schema",
    "read_record_index",
    "record_files",
    "records_to_table",
    "superseded_parts",
    "write_record_part",
]

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),  # the edit id; null only for a manifest row without an id
        pa.field("row_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # ok | error | duplicate
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
    write_bytes_atomic(uri, _parquet_bytes(records_to_table(records, schema)), options)
    return uri


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# --- resume -----------------------------------------------------------------------------------


class RecordIndex(dict):
    """``id -> (status, part_uri)`` of each id's winning record, as read by ``read_record_index``.

    An ``ok`` record wins over the others; otherwise the first part (in sorted order) wins.
    ``shadowed`` maps a part URI to ids whose ``error`` record there lost to an ``ok`` record in
    another part: leftovers of a run that stopped before ``drop_superseded``.
    ``other_parts`` maps an id found in several parts to the parts that did not win.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shadowed: dict[str, set[str]] = {}
        self.other_parts: dict[str, set[str]] = {}

    def _add(self, record_id: str, status: str, part: str) -> None:
        previous = self.get(record_id)
        if previous is None:
            self[record_id] = (status, part)
            return
        if previous[1] == part:  # e.g. an ok record and a duplicate record of the same id
            if status == Status.OK:
                self[record_id] = (status, part)
            return
        loser_status, loser_part = status, part
        if status == Status.OK and previous[0] != Status.OK:
            self[record_id] = (status, part)
            loser_status, loser_part = previous
        self.other_parts.setdefault(record_id, set()).add(loser_part)
        if loser_status == Status.ERROR and self[record_id][0] == Status.OK:
            self.shadowed.setdefault(loser_part, set()).add(record_id)


def record_files(prefix: str, options: StorageOptions | None = None) -> list[str]:
    """The result record parts under ``PREFIX/manifest``, sorted."""
    return [
        uri for uri in list_files(OutputLayout(prefix).records, ".parquet", options)
        if posixpath.basename(uri).startswith("part-")
    ]


def read_record_index(prefix: str, options: StorageOptions | None = None) -> RecordIndex:
    """Index the result manifest under ``prefix``, reading only the ``id`` and ``status`` columns.

    Memory is per id, not per record. An empty or missing manifest gives an empty index.
    """
    index = RecordIndex()
    for part in record_files(prefix, options):
        filesystem, path = resolve(part, options)
        try:
            table = pq.read_table(path, columns=["id", "status"], filesystem=filesystem)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read result part {redact_uri(part)}: {exc}") from exc
        for record_id, status in zip(table["id"].to_pylist(), table["status"].to_pylist()):
            if record_id is not None:
                index._add(record_id, status, part)
    return index


def superseded_parts(index_before_run: RecordIndex, ids_rewritten: Iterable[str]) -> dict[str, set[str]]:
    """Which older parts hold records that this run's records replace: ``part_uri -> ids``.

    ``ids_rewritten`` are the ids this run wrote a record for (pass only the ``ok`` ones to keep
    old records of ids that failed again). The index's ``shadowed`` leftovers are included.
    """
    parts: dict[str, set[str]] = {part: set(ids) for part, ids in index_before_run.shadowed.items()}
    for record_id in ids_rewritten:
        entry = index_before_run.get(record_id)
        if entry is None:
            continue
        for part in {entry[1], *index_before_run.other_parts.get(record_id, ())}:
            parts.setdefault(part, set()).add(record_id)
    return parts


def drop_superseded(
    prefix: str,
    index_before_run: RecordIndex,
    ids_rewritten: Iterable[str],
    options: StorageOptions | None = None,
) -> list[str]:
    """Remove superseded records from the parts that existed before this run; return those parts.

    Each affected part is rewritten without the superseded rows (atomic replace), or deleted when
    nothing is left, so the result manifest keeps one record per id. Call it once, after every
    part of this run is written, with the index read *before* this run wrote anything (an index
    that already holds this run's parts would drop the new records too). Parts not under
    ``prefix`` are refused.
    """
    manifest_dir = OutputLayout(prefix).records.rstrip("/") + "/"
    touched = []
    for part, ids in sorted(superseded_parts(index_before_run, ids_rewritten).items()):
        if not part.startswith(manifest_dir):
            raise ValueError(f"part {redact_uri(part)} is not under {redact_uri(manifest_dir)}")
        filesystem, path = resolve(part, options)
        try:
            table = pq.read_table(path, filesystem=filesystem)
        except FileNotFoundError:
            continue  # already rewritten away by an earlier, interrupted drop
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read result part {redact_uri(part)}: {exc}") from exc
        keep = pc.invert(pc.fill_null(pc.is_in(table["id"], pa.array(sorted(ids), pa.string())), False))
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            continue
        if kept.num_rows == 0:
            delete(part, options)
        else:
            write_bytes_atomic(part, _parquet_bytes(kept), options)
        touched.append(part)
    return touched
