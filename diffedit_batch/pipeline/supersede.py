"""The superseded records a run's plan found, removed from their record files by a Ray Data pass.

    plan's superseded files (file, id, status, request, pending) [-> semi-join the run's own records]
        -> groupby(file).map_groups(rewrite that record file)

Each bucket of the plan wrote the records it supersedes (an earlier error of an edit it retried, an edit whose
request or settings changed, earlier duplicates); a bucket holds ids from every record file, so a record file's
keys are spread over all the buckets. Grouping them by file brings each file's keys to one task, which rewrites that
file alone (`data.compaction.drop_superseded`): memory is one file's keys per task, and the driver gets one row per
file changed. A re-run that edits 10^7 rows again supersedes 10^7 records without any process holding them all.

When: the keys the plan settled itself (`pending` false) before the edit pass; the keys of edits the run does again
once their new records exist: at the end of the run, or, for a run that stops, only those whose request the run's
own record files name (a left-semi join on the request id), so an edit not reached keeps its one earlier record.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffedit_batch.data.compaction import (
    RemoveSuperseded,
    drop_superseded,
    superseded_keep_files,
    superseded_keys,
)
from diffedit_batch.data.records import RecordFile, read_record_file, request_id_of
from diffedit_batch.data.worklist import PLAN_SUPERSEDED_SCHEMA
from diffedit_batch.data.storage import StorageOptions, read_bytes

from .planning import MAX_PARTITIONS, choose_shuffle

# Superseded files read by one task (each is a bucket's keys: up to ROWS_PER_BUCKET rows).
_FILES_PER_TASK = 8
# Files whose keys one group-by partition holds, about: a partition's task rewrites its files one after another.
_FILES_PER_PARTITION = 16
_CHANGED_SCHEMA = pa.schema([pa.field("file", pa.string()), pa.field("rows_left", pa.int64())])


def read_superseded(batch: pa.Table, *, options: StorageOptions, pending: bool | None = None) -> pa.Table:
    """The superseded keys of each plan file named in `batch` (`uri`); only those whose `pending` is `pending`
    (None: all). Files from before the plan said which were pending count as pending."""
    tables = []
    for uri in batch.column("uri").to_pylist():
        table = pq.read_table(pa.BufferReader(read_bytes(uri, options)))
        for field in PLAN_SUPERSEDED_SCHEMA:
            if field.name not in table.column_names:
                fill = pa.array([field.name == "pending"] * table.num_rows, field.type) if field.type == pa.bool_() \
                    else pa.nulls(table.num_rows, field.type)
                table = table.append_column(field, fill)
        table = table.select(PLAN_SUPERSEDED_SCHEMA.names).cast(PLAN_SUPERSEDED_SCHEMA)
        if pending is not None:
            table = table.filter(pc.equal(table.column("pending"), pending))
        tables.append(table)
    return pa.concat_tables(tables) if tables else PLAN_SUPERSEDED_SCHEMA.empty_table()


def recorded_requests(batch: pa.Table, *, options: StorageOptions) -> pa.Table:
    """The requests (`request_id`) that the record files named in `batch` (`uri`, `size`, `name`) hold records of."""
    ids = []
    for uri, size, name in zip(*(batch.column(c).to_pylist() for c in ("uri", "size", "name"))):
        records = read_record_file(RecordFile(uri, size, name), options, columns=["id", "candidate"])
        ids.extend(dict.fromkeys(request_id_of(record_id, candidate) for record_id, candidate in
                                 zip(records.column("id").to_pylist(), records.column("candidate").to_pylist())))
    return pa.table({"request_id": pa.array(ids, pa.string())})


def rewrite_record_file(keys: pa.Table, *, files: dict[str, tuple[str, int]], options: StorageOptions) -> pa.Table:
    """One group: the superseded keys of one record file (`files`: the live record files, name -> (uri, size)).
    Rewrites that file without them, or deletes it when nothing is left, and returns (file, records left). A key
    naming a file that is not live is skipped: the plan read every file it names, and the run holds the lease."""
    name = keys.column("file")[0].as_py()
    if name not in files:
        return _CHANGED_SCHEMA.empty_table()
    uri, size = files[name]
    left = drop_superseded(RecordFile(uri, size, name), superseded_keys(keys)[name], options,
                           superseded_keep_files(keys).get(name, set()))
    return pa.table({"file": [name], "rows_left": [left]}, schema=_CHANGED_SCHEMA)


def remove_superseded(superseded_files: list[str], options: StorageOptions, *, pending: bool | None = None,
                      recorded: list[RecordFile] | None = None) -> RemoveSuperseded:
    """A `data.compaction.RemoveSuperseded` over the plan's superseded files (needs Ray): records removed by file in
    a Ray Data pass; returns {file name: records left} of the files the keys name.

    `pending` picks the keys: False, those the plan settled itself (removed before the edit pass); True, those that
    this run's edits replace; None, all. `recorded` (with `pending=True`): only the keys of requests that these
    record files (the run's own, when it stopped early) hold records of; the others' earlier records stay, as the
    only records of edits not done again yet."""

    def remove(live: list[RecordFile]) -> dict[str, int]:
        if not superseded_files or not live or (recorded is not None and not recorded):
            return {}
        import ray

        files = {file.name: (file.uri, file.size) for file in live}  # ~100 bytes a file: 10^4 files at 10^8 edits
        keys = ray.data.from_items([{"uri": uri} for uri in superseded_files],
                                   override_num_blocks=math.ceil(len(superseded_files) / _FILES_PER_TASK))
        keys = keys.map_batches(read_superseded, batch_size=_FILES_PER_TASK, batch_format="pyarrow",
                                fn_kwargs={"options": options, "pending": pending}, num_cpus=0.25)
        partitions = max(1, min(len(files) // _FILES_PER_PARTITION, MAX_PARTITIONS))
        if recorded is not None:
            requests = ray.data.from_items(
                [{"uri": file.uri, "size": file.size, "name": file.name} for file in recorded],
                override_num_blocks=math.ceil(len(recorded) / _FILES_PER_TASK),
            ).map_batches(recorded_requests, batch_size=_FILES_PER_TASK, batch_format="pyarrow",
                          fn_kwargs={"options": options}, num_cpus=0.25)
            keys = keys.join(requests, join_type="left_semi", num_partitions=partitions, on=("request_id",))
        choose_shuffle(keys, partitions)
        left = keys.groupby("file", num_partitions=partitions).map_groups(
            rewrite_record_file, batch_format="pyarrow", fn_kwargs={"files": files, "options": options}, num_cpus=0.5,
        ).take_all()
        return {row["file"]: row["rows_left"] for row in left}

    return remove
