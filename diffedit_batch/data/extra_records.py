"""One record per edit: the extra records a stopped run left, found and removed without a run's plan.

A run that redoes an edit writes its new record before the earlier one is removed (two files cannot change at once
on any store); its end, its clean-up when it is stopped, and the next run's start remove the earlier one. A run
killed outright (SIGKILL, a lost node) can leave both: `diffedit-batch compact` removes the extra ones with
`remove_extra_records`. The rule is the readers' (`data.results`): of an edit id's records, a done one (`ok`,
`filtered`) beats an `error`; among equals the newest `finished_at` wins (then the later file, the later row).
`duplicate` records and records without an id are never extra.

Memory: the ids of the manifest are held a slice at a time (`IDS_PER_PASS`), each slice one read of the `id`,
`status` and `finished_at` columns of every file; the files that hold extra records are then rewritten one at a
time, streaming, and the loose output files of the records removed are deleted (those the winning record names
stay).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .outputs import split_member
from .records import RecordFile, list_record_files, read_record_file
from .status import Status
from .storage import StorageOptions, delete, write_bytes_atomic

__all__ = ["IDS_PER_PASS", "ExtraRecords", "remove_extra_records", "remove_unnamed_outputs"]

IDS_PER_PASS = 2_000_000
_DONE = (Status.OK, Status.FILTERED)


@dataclass
class ExtraRecords:
    removed: int = 0  # records removed
    files_rewritten: int = 0
    outputs_deleted: int = 0  # loose output files (edit, mask) that only a removed record named


def _slice_of(edit_id: str, slices: int) -> int:
    digest = hashlib.blake2b(edit_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % slices


def remove_extra_records(prefix: str, options: StorageOptions | None = None) -> ExtraRecords:
    """Remove every record of an edit id but the one that wins (see the module docstring); returns what it did.
    Raises StorageError when a file cannot be read or written (what was done before stays consistent)."""
    files = list_record_files(prefix, options).live
    rows = sum(file.rows or 0 for file in files)
    slices = max(1, math.ceil(rows / IDS_PER_PASS))
    # file index -> {row index in the file} to drop; the URIs the winners name
    drop: dict[int, set[int]] = defaultdict(set)
    losers_outputs: set[str] = set()
    winners_outputs: set[str] = set()
    for part in range(slices):
        best: dict[str, tuple[tuple, int, int, tuple]] = {}
        losers: list[tuple[str, int, int, tuple]] = []
        for index, file in enumerate(files):
            table = read_record_file(file, options, columns=["id", "status", "finished_at", "image_uri", "mask_uri"])
            columns = [table.column(name).to_pylist() for name in table.column_names]
            for row, (edit_id, status, finished, image, mask) in enumerate(zip(*columns)):
                if edit_id is None or status == Status.DUPLICATE or (slices > 1 and _slice_of(edit_id, slices) != part):
                    continue
                rank = (status in _DONE, finished is not None, finished or 0, index, row)
                outputs = (image, mask)
                previous = best.get(edit_id)
                if previous is None:
                    best[edit_id] = (rank, index, row, outputs)
                elif rank > previous[0]:
                    losers.append((edit_id, *previous[1:]))
                    best[edit_id] = (rank, index, row, outputs)
                else:
                    losers.append((edit_id, index, row, outputs))
        for edit_id, index, row, outputs in losers:
            drop[index].add(row)
            losers_outputs.update(uri for uri in outputs if uri)
            winners_outputs.update(uri for uri in best[edit_id][3] if uri)
        del best, losers
    result = ExtraRecords()
    for index, rows_to_drop in sorted(drop.items()):
        _rewrite_without(files[index], rows_to_drop, options)
        result.removed += len(rows_to_drop)
        result.files_rewritten += 1
    for uri in sorted(losers_outputs - winners_outputs):
        if split_member(uri) is None:
            delete(uri, options)
            result.outputs_deleted += 1
    return result


def _rewrite_without(file: RecordFile, rows: set[int], options: StorageOptions | None) -> None:
    """Rewrite `file` (atomically) without the rows at these positions, or delete it when none are left."""
    from .compaction import STREAM_ROWS, _parquet_file  # one way to open and stream a record file

    parquet = _parquet_file(file, options)
    schema, total = parquet.schema_arrow, parquet.metadata.num_rows
    if len(rows) >= total:
        parquet.close()
        delete(file.uri, options)
        return
    sink = pa.BufferOutputStream()
    offset = 0
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for batch in parquet.iter_batches(batch_size=STREAM_ROWS):
            keep = [offset + k not in rows for k in range(batch.num_rows)]
            writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(keep)))
            offset += batch.num_rows
    parquet.close()
    write_bytes_atomic(file.uri, sink.getvalue(), options)


def remove_unnamed_outputs(prefix: str, options: StorageOptions | None = None) -> int:
    """Delete the loose output files (`PREFIX/images/`, `PREFIX/masks/`: the `files` format) that no record names:
    a candidate demoted or an edit superseded whose files a stopped run left, or outputs written by a run that
    stopped before their records. Compared by file name (a key holds a hash of the edit id), so a record naming
    its files in another spelling of the prefix keeps them. Returns how many were deleted. Run under the lease only:
    a running run writes its outputs before their records. Memory: the names of the loose files."""
    from .layout import OutputLayout
    from .storage import join, list_files

    layout = OutputLayout(prefix)
    listed = {uri.rsplit("/", 1)[-1]: uri for folder in (join(layout.prefix, "images"), join(layout.prefix, "masks"))
              for uri in list_files(folder, ".png", options)}
    if not listed:
        return 0
    names = set(listed)
    for file in list_record_files(prefix, options).live:
        table = read_record_file(file, options, columns=["image_uri", "mask_uri"])
        for column in table.columns:
            for uri in column.drop_null().to_pylist():
                names.discard(uri.rsplit("/", 1)[-1])
    for name in sorted(names):
        delete(listed[name], options)
    return len(names)

