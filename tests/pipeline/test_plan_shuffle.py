"""The plan's hash shuffle keeps its shards out of the driver's memory (each is over Ray's inline limit), and its
buckets and partitions are sized by the bytes of the plan's rows, not only by their number."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from diffedit_batch.data.fingerprints import request_fingerprint
from diffedit_batch.data.worklist import PLAN_SCHEMA, records_to_plan_rows, requests_to_plan_rows
from diffedit_batch.pipeline.planning import (
    BUCKET_BYTES,
    EARLIER_ROW_BYTES,
    MAX_PARTITIONS,
    MAX_WIDE_PARTITIONS,
    PARTITION_BYTES,
    SHARD_BYTES,
    bucket_count,
    estimate_plan_bytes,
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


def test_wide_rows_make_more_buckets_and_partitions_of_bounded_bytes():
    narrow = 10**7 * 400  # a re-run of 10^7 rows: about 400 B of plan rows each, request and record
    assert bucket_count(10**7, 10**7, narrow) == 400 and plan_partitions(400, narrow) == MAX_PARTITIONS
    wide = 10**6 * 4500  # 10^6 rows with two 2 KB prompts
    buckets = bucket_count(10**6, 0, wide)
    assert buckets > bucket_count(10**6, 0) and wide / buckets <= BUCKET_BYTES
    partitions = plan_partitions(buckets, wide)
    assert MAX_PARTITIONS < partitions <= MAX_WIDE_PARTITIONS and wide / partitions <= PARTITION_BYTES
    # a map task's input stays bounded however wide the plan
    assert plan_partitions(10**6, 10**15) == MAX_WIDE_PARTITIONS
    assert shuffle_input_bytes(MAX_WIDE_PARTITIONS) == MAX_WIDE_PARTITIONS * SHARD_BYTES <= 256 * 2**20
    # a small plan keeps its bucket for each partition
    assert plan_partitions(3, 3 * BUCKET_BYTES) == 3


def _manifest(path, rows: int, prompt_bytes: int, targets: int = 0):
    ids = [f"row-{i:07d}" for i in range(rows)]
    long = "x" * prompt_bytes
    table = {"id": ids, "image": ["images/one.png"] * rows, "source_prompt": [f"{i} {long}" for i in ids]}
    if targets:
        table["target_prompts"] = [[f"{i} {k} {long}" for k in range(targets)] for i in ids]
    else:
        table["target_prompt"] = [f"{i} {long}" for i in ids]
    pq.write_table(pa.table(table), path)


def test_the_plan_bytes_are_estimated_from_a_sample_of_the_manifest_prompts_and_targets_included(tmp_path):
    from diffedit_batch.config import Config
    from diffedit_batch.data.manifest import inspect_manifest

    estimates = {}
    for name, prompt_bytes, targets in (("short", 10, 0), ("long", 2000, 0), ("targets", 2000, 3)):
        folder = tmp_path / name
        folder.mkdir()
        for part in range(3):
            _manifest(folder / f"part-{part}.parquet", 700, prompt_bytes, targets)
        estimates[name] = estimate_plan_bytes(Config(), inspect_manifest(str(folder)), earlier_records=0)
    rows = 2100
    assert 150 * rows < estimates["short"] < 600 * rows  # ids, a resolved image path, fingerprints
    assert 4000 * rows < estimates["long"] < 4600 * rows  # two prompts of ~2 KB a row
    assert 3 * 4000 * rows < estimates["targets"] < 3 * 4600 * rows  # three requests a row, each with both prompts
    with_records = estimate_plan_bytes(Config(), inspect_manifest(str(tmp_path / "short")), earlier_records=1000)
    assert with_records == estimates["short"] + 1000 * EARLIER_ROW_BYTES
