"""The records whose verdict a new candidate selection changed, rewritten by file in a Ray Data pass.

    plan's reselected files (file, id, status -> new status) -> groupby(file).map_groups(rewrite that record file)

Each bucket of the plan selected its done requests' candidates again (`data.reselect`); grouping the changes by
record file brings each file's changes to one task, which rewrites that file alone. Runs before the edit pass.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.data.records import RecordFile
from diffedit_batch.data.reselect import RESTATUS_SCHEMA, restatus_record_file
from diffedit_batch.data.storage import StorageOptions, read_bytes

from .planning import MAX_PARTITIONS, choose_shuffle

_FILES_PER_TASK = 8
_FILES_PER_PARTITION = 16


def read_reselected(batch: pa.Table, *, options: StorageOptions) -> pa.Table:
    tables = [pq.read_table(pa.BufferReader(read_bytes(uri, options))).select(RESTATUS_SCHEMA.names)
              for uri in batch.column("uri").to_pylist()]
    return pa.concat_tables(tables) if tables else RESTATUS_SCHEMA.empty_table()


def rewrite_verdicts(changes: pa.Table, *, files: dict[str, tuple[str, int]], options: StorageOptions) -> pa.Table:
    """One group: the changed verdicts of one record file, written into it. Returns (file, records changed)."""
    name = changes.column("file")[0].as_py()
    if name not in files:
        return pa.table({"file": pa.array([], pa.string()), "changed": pa.array([], pa.int64())})
    uri, size = files[name]
    changed = restatus_record_file(RecordFile(uri, size, name), changes, options)
    return pa.table({"file": [name], "changed": pa.array([changed], pa.int64())})


def apply_reselection(reselected_files: list[str], live: list[RecordFile], options: StorageOptions) -> int:
    """Rewrite the record files the plan's reselected files name (needs Ray); returns the records changed."""
    if not reselected_files or not live:
        return 0
    import ray

    files = {file.name: (file.uri, file.size) for file in live}
    changes = ray.data.from_items([{"uri": uri} for uri in reselected_files],
                                  override_num_blocks=math.ceil(len(reselected_files) / _FILES_PER_TASK))
    changes = changes.map_batches(read_reselected, batch_size=_FILES_PER_TASK, batch_format="pyarrow",
                                  fn_kwargs={"options": options}, num_cpus=0.25)
    partitions = max(1, min(len(files) // _FILES_PER_PARTITION, MAX_PARTITIONS))
    choose_shuffle(changes, partitions)
    done = changes.groupby("file", num_partitions=partitions).map_groups(
        rewrite_verdicts, batch_format="pyarrow", fn_kwargs={"files": files, "options": options}, num_cpus=0.5,
    ).take_all()
    return sum(row["changed"] for row in done)
