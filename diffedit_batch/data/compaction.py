"""Compaction: keep the result manifest in few large files, one record per edit, whatever crashes in between.

A run writes its records in small parts as it goes (a crash then re-does little). At its end, and with
``diffedit-batch compact`` for older outputs, ``compact_records``:

1. deletes dead files: files a compaction merged into another file but had not deleted yet;
2. removes superseded records (the plan of a run names them: an earlier error of an edit it retried, earlier
   duplicate records it wrote again) by rewriting their files in place, atomically;
3. merges the files holding fewer than ``records_per_file`` records into files of at least that many (whole
   files into each output, in name order), so at most one file stays small.

Each merged output carries, in its footer (``records.REPLACES_KEY``), the names of the files it holds; once the
output exists those files are dead to every reader (``records.list_record_files``) even if the compaction is
killed before deleting them, so a record is never read twice. Every write is atomic (temp name + rename, or one
upload): a crash at any moment leaves whole files and a readable manifest, and the next compaction finishes the
job. Memory is flat in the size of the manifest: a merged file is written streaming, one source file's records at
a time, into its compressed bytes (`MERGE_THREADS` at a time), and a file rewritten without its superseded records
is streamed a batch at a time, holding only that file's superseded keys. Given as a table, the superseded keys are
held whole; a run gives a function instead (`RemoveSuperseded`) that groups them by file in a distributed pass
(`pipeline.supersede`), so no process holds every key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .layout import OutputLayout
from .outputs import split_member
from .records import REPLACES_KEY, RecordFile, conform_records, list_record_files
from .storage import StorageError, StorageOptions, delete, join, redact_uri, resolve, write_bytes_atomic

__all__ = ["DEFAULT_RECORDS_PER_FILE", "SUPERSEDED_SCHEMA", "CompactionResult", "RemoveSuperseded", "compact_records",
           "compaction_id", "drop_superseded"]

log = logging.getLogger(__name__)

DEFAULT_RECORDS_PER_FILE = 10_000
# Merged files written at once: memory is this many files' records (each about records_per_file).
MERGE_THREADS = 4

SUPERSEDED_SCHEMA = pa.schema([
    pa.field("file", pa.string()),  # the record file's name under PREFIX/manifest
    pa.field("id", pa.string()),  # the edit id; null stands for every record without an id in that file
    pa.field("status", pa.string()),  # only records of this status are removed
])


# Removes superseded records from the live record files it is given (rewriting or deleting those that hold some) and
# returns {file name: records left} for each file its keys named.
RemoveSuperseded = Callable[[list["RecordFile"]], dict[str, int]]


@dataclass
class CompactionResult:
    files_before: int = 0
    files_after: int = 0
    dead_deleted: int = 0  # files an interrupted compaction had merged but not deleted
    rewritten: int = 0  # files rewritten without their superseded records
    superseded: int = 0  # records removed
    merged: int = 0  # small files merged into larger ones
    written: int = 0  # merged files written

    def line(self) -> str:
        return (f"record files {self.files_before} -> {self.files_after} ({self.merged} merged into {self.written}, "
                f"{self.superseded} superseded records removed from {self.rewritten}, {self.dead_deleted} dead removed)")


def compaction_id() -> str:
    """A fresh, sortable id for a compaction that is not part of a run (`diffedit-batch compact`)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-compact-" + uuid.uuid4().hex[:8]


def compact_records(
    prefix: str,
    options: StorageOptions | None = None,
    *,
    records_per_file: int = DEFAULT_RECORDS_PER_FILE,
    superseded: pa.Table | RemoveSuperseded | None = None,
    run_id: str | None = None,
    threads: int = 8,
    merge: bool = True,
) -> CompactionResult:
    """Compact the result manifest under ``prefix`` (see the module docstring); returns what it did.

    ``superseded`` names the records to remove: a table (``SUPERSEDED_SCHEMA``), or a function that removes them
    itself (``RemoveSuperseded``). ``merge``: False removes and deletes only. ``run_id`` names the merged files (default: a fresh compaction id). Raises
    StorageError when a file cannot be read or written; what was done before stays consistent.
    """
    if isinstance(records_per_file, bool) or not isinstance(records_per_file, int) or records_per_file < 1:
        raise ValueError(f"records_per_file must be a positive integer, got {records_per_file!r}")
    run_id = run_id or compaction_id()
    found = list_record_files(prefix, options, threads=threads)
    result = CompactionResult(files_before=len(found.live) + len(found.dead))
    _map(threads, lambda file: delete(file.uri, options), found.dead)
    result.dead_deleted = len(found.dead)

    live = found.live
    if isinstance(superseded, pa.Table):
        superseded = _remove_superseded_locally(superseded, options, threads) if superseded.num_rows else None
    if superseded is not None:
        rows_left = superseded(live)
        changed = [file for file in live if rows_left.get(file.name, file.rows) < file.rows]
        result.rewritten = len(changed)
        result.superseded = sum(file.rows - rows_left[file.name] for file in changed)
        live = [dataclasses.replace(file, rows=rows_left.get(file.name, file.rows)) for file in live]
        live = [file for file in live if file.rows]  # emptied files were deleted

    small = sorted((file for file in live if file.rows < records_per_file and merge), key=lambda file: file.name)
    groups = _groups(small, records_per_file)
    layout = OutputLayout(prefix)
    written = _map(
        min(threads, MERGE_THREADS),
        lambda job: _merge(job[1], layout.records, f"records-{run_id}-{job[0]:05d}", options),
        list(enumerate(groups)),
    )
    result.merged = sum(len(group) for group in groups)
    result.written = len(written)
    result.files_after = len(live) - result.merged + result.written
    if result.merged or result.superseded or result.dead_deleted:
        log.info("compaction of %s: %s", redact_uri(prefix), result.line())
    return result


def _map(threads: int, function, items: Sequence) -> list:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        return list(pool.map(function, items))


def superseded_keep_files(superseded: pa.Table) -> dict[str, set[str]]:
    """{file name: ids of its superseded records whose loose files stay} of a superseded table with a `keep_files`
    column (the plan's); empty without one."""
    keep: dict[str, set[str]] = defaultdict(set)
    if "keep_files" not in superseded.column_names:
        return keep
    for file, edit_id, kept in zip(*(superseded.column(name).to_pylist() for name in ("file", "id", "keep_files"))):
        if kept:
            keep[file].add(edit_id)
    return keep


def superseded_keys(superseded: pa.Table) -> dict[str, set[tuple[str | None, str]]]:
    """{file name: its superseded (id, status) pairs} of a ``SUPERSEDED_SCHEMA`` table."""
    keys: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
    for file, edit_id, status in zip(*(superseded.column(name).to_pylist() for name in ("file", "id", "status"))):
        keys[file].add((edit_id, status))
    return keys


def _remove_superseded_locally(superseded: pa.Table, options: StorageOptions | None, threads: int) -> RemoveSuperseded:
    """A ``RemoveSuperseded`` over keys held here, `MERGE_THREADS` files at a time."""
    keys = superseded_keys(superseded)
    keep_files = superseded_keep_files(superseded)

    def remove(live: list[RecordFile]) -> dict[str, int]:
        targets = [file for file in live if file.name in keys]
        left = _map(min(threads, MERGE_THREADS),
                    lambda file: drop_superseded(file, keys[file.name], options, keep_files.get(file.name, set())),
                    targets)
        return {file.name: rows for file, rows in zip(targets, left)}

    return remove


# Records read at once while a file is streamed into a merged or rewritten file: a row group of the output.
STREAM_ROWS = 4096


def _parquet_file(file: RecordFile, options: StorageOptions | None, missing_ok: bool = False) -> pq.ParquetFile:
    """The file, opened; `missing_ok`: FileNotFoundError passes through (else every failure is a StorageError)."""
    filesystem, path = resolve(file.uri, options)
    try:
        return pq.ParquetFile(filesystem.open_input_file(path))
    except FileNotFoundError:
        if missing_ok:
            raise
        raise StorageError(f"cannot read record file {redact_uri(file.uri)}: it does not exist") from None
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read record file {redact_uri(file.uri)}: {exc}") from exc


def _batches(file: RecordFile, options: StorageOptions | None, columns: list[str] | None = None):
    """The file's records, `STREAM_ROWS` at a time."""
    parquet = _parquet_file(file, options)
    try:
        for batch in parquet.iter_batches(batch_size=STREAM_ROWS, columns=columns):
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read record file {redact_uri(file.uri)}: {exc}") from exc
    finally:
        parquet.close()


def drop_superseded(file: RecordFile, keys: set[tuple[str | None, str]], options: StorageOptions | None,
                    keep_files: frozenset[str] | set[str] = frozenset()) -> int:
    """Rewrite ``file`` without the records ``keys`` (its (id, status) pairs) name (in place, atomically; its footer
    metadata kept), or delete it when nothing is left; then delete the loose output files (``files`` format: the
    edit and its mask) of the records dropped, but those of ids in ``keep_files`` and any that a record left in the
    file names. Returns the records left (read from the file itself, not the listing). Streams: two passes over the
    file, the first reading only ids, statuses and output URIs. Safe to repeat (a retried task): a file already
    rewritten has nothing left to drop, and a file already deleted (every record dropped) has 0 left."""
    try:
        parquet = _parquet_file(file, options, missing_ok=True)
    except FileNotFoundError:
        return 0
    schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
    parquet.close()
    outputs = [name for name in ("image_uri", "mask_uri") if name in schema.names]
    drop = 0
    dropped_files: set[str] = set()
    named_files: set[str] = set()
    for table in _batches(file, options, ["id", "status", *outputs]):
        ids, statuses = table.column("id").to_pylist(), table.column("status").to_pylist()
        uris = [table.column(name).to_pylist() for name in outputs]
        for index, (edit_id, status) in enumerate(zip(ids, statuses)):
            dropped = (edit_id, status) in keys
            drop += dropped
            files = {column[index] for column in uris} - {None}
            if dropped and edit_id not in keep_files:
                dropped_files.update(files)
            elif not dropped:
                named_files.update(files)
    if not drop:
        return rows
    loose = sorted(uri for uri in dropped_files - named_files if split_member(uri) is None)
    if drop == rows:
        delete(file.uri, options)
        _map(MERGE_THREADS, lambda uri: delete(uri, options), loose)
        return 0
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for table in _batches(file, options):
            ids, statuses = table.column("id").to_pylist(), table.column("status").to_pylist()
            writer.write_table(table.filter(pa.array([(i, s) not in keys for i, s in zip(ids, statuses)])))
    write_bytes_atomic(file.uri, sink.getvalue(), options)
    # After the rewrite: until then a record named them.
    _map(MERGE_THREADS, lambda uri: delete(uri, options), loose)
    return rows - drop


def _groups(small: list[RecordFile], records_per_file: int) -> list[list[RecordFile]]:
    """Whole small files, in order, into groups of at least ``records_per_file`` records; a last group of one
    file is left alone (it is the one small file that may stay)."""
    groups, group, rows = [], [], 0
    for file in small:
        group.append(file)
        rows += file.rows
        if rows >= records_per_file:
            groups.append(group)
            group, rows = [], 0
    if len(group) > 1:
        groups.append(group)
    return groups


def _merge(group: list[RecordFile], folder: str, name: str, options: StorageOptions | None) -> str:
    """Write the records of ``group`` as one file naming them as replaced, then delete them. Streams: the output is
    built as compressed Parquet one source batch at a time, so memory is the output's bytes, not its records."""
    # Transitively: a source that is itself a merged file passes on what it replaced, so nothing it replaced can
    # come back to life when the source is deleted.
    replaces = sorted({file.name for file in group} | {name for file in group for name in file.replaces})
    sink = pa.BufferOutputStream()
    try:
        schemas = []
        for file in group:
            parquet = _parquet_file(file, options)
            schemas.append(parquet.schema_arrow.remove_metadata())
            parquet.close()
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        schema = schema.with_metadata({REPLACES_KEY: json.dumps(replaces).encode()})
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for file in group:
                for table in _batches(file, options):
                    writer.write_table(conform_records(table, schema).replace_schema_metadata(schema.metadata))
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StorageError(f"record files {', '.join(f.name for f in group)} cannot be merged: {exc}") from exc
    uri = join(folder, f"{name}.parquet")
    write_bytes_atomic(uri, sink.getvalue(), options)
    for file in group:
        delete(file.uri, options)
    return uri

