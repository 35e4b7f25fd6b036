"""The plan's hash shuffle keeps its shards out of the driver's memory: each is over Ray's inline limit."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.ipc as ipc

from diffedit_batch.data.fingerprints import request_fingerprint
from diffedit_batch.data.worklist import PLAN_SCHEMA, records_to_plan_rows, requests_to_plan_rows
from diffedit_batch.pipeline.planning import (
    MAX_PARTITIONS,
    SHARD_BYTES,
    bucket_count,
    plan_partitions,
    shuffle_input_bytes,
)

# Ray's default max_direct_call_object_size: a task's return up to this size is kept in its owner's (the driver's)
# memory rather than in the object store.
RAY_INLINE_LIMIT = 100 * 1024


def _shard(table: pa.Table, raw_bytes: int) -> pa.Table:
    """The first `raw_bytes` of `table` (as Ray Data counts them), as one shard."""
    rows = int(table.num_rows * raw_bytes / table.nbytes)
    assert rows < table.num_rows, "the sample is smaller than a shard"
    return table.slice(0, rows)


def _compressed_size(table: pa.Table) -> int:
    """Bytes of the shard as Ray Data's shuffle returns it (an Arrow IPC stream, zstd, its default)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().size


def _plan_rows(n: int) -> tuple[pa.Table, pa.Table]:
    """Requests and earlier records of n rows with sequential ids and repeated prompts: rows that compress well."""
    ids = [f"row-{i:09d}" for i in range(n)]
    manifest = pa.table({
        "id": ids, "image": ["images/one.png"] * n, "source_prompt": ["a photo of a thing"] * n,
        "target_prompt": [f"a painting of thing {i[-3:]}" for i in ids], "row_index": pa.array(range(n), pa.int64()),
    })
    requests = requests_to_plan_rows(manifest, base_dir="/data", job_seed=0, buckets=400,
                                     settings=("0123456789abcdef",) * 4)
    records = records_to_plan_rows(pa.table({
        "id": ids, "row_id": ids, "status": ["ok"] * n,
        "request_fingerprint": [request_fingerprint(r) for r in requests.to_pylist()],
        "settings_fingerprint": ["0123456789abcdef"] * n,
    }), file="part-earlier-000000.parquet", buckets=400)
    return requests, records


def test_a_shard_of_plan_rows_is_too_large_to_be_kept_in_the_driver():
    requests, records = _plan_rows(40_000)
    assert requests.schema == records.schema == PLAN_SCHEMA
    for rows in (requests, records, pa.concat_tables([requests, records])):
        assert _compressed_size(_shard(rows, SHARD_BYTES)) > 2 * RAY_INLINE_LIMIT  # with a margin for other data


def test_a_map_task_takes_a_shard_for_every_partition():
    for buckets in (1, 8, 41, 64, 400, 4000):
        partitions = plan_partitions(buckets)
        assert partitions == min(buckets, MAX_PARTITIONS)
        assert shuffle_input_bytes(partitions) >= partitions * SHARD_BYTES
    # the input a map task takes does not grow with the manifest past the partitions' cap
    assert shuffle_input_bytes(plan_partitions(bucket_count(10**8, 10**8))) == MAX_PARTITIONS * SHARD_BYTES
