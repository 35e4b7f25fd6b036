"""The plan's buckets are sized by the bytes of its rows as well as their number; a plan of more than a few buckets
is shuffled by Ray Data's disk-based hash shuffle, a bucket per partition, and decides the same as the sort shuffle."""

from __future__ import annotations

import pytest

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from diffedit_batch.pipeline import planning, run_job
from diffedit_batch.pipeline.planning import (
    BUCKET_BYTES,
    EARLIER_ROW_BYTES,
    MAX_PARTITIONS,
    SMALL_PLAN_BUCKETS,
    bucket_count,
    choose_shuffle,
    estimate_plan_bytes,
    plan_partitions,
)

from .conftest import read_records, write_manifest


def test_a_partition_is_a_bucket_up_to_the_cap():
    for buckets in (1, 8, 41, 400, MAX_PARTITIONS):
        assert plan_partitions(buckets) == buckets
    # 10^8 done rows and 10^8 requests: 4,000 buckets, a few per partition
    assert plan_partitions(bucket_count(10**8, 10**8)) == MAX_PARTITIONS


def test_wide_rows_make_more_buckets_of_bounded_bytes():
    narrow = 10**7 * 400  # a re-run of 10^7 rows: about 400 B of plan rows each, request and record
    assert bucket_count(10**7, 10**7, narrow) == 400 == plan_partitions(400)
    wide = 10**6 * 4500  # 10^6 rows with two 2 KB prompts
    buckets = bucket_count(10**6, 0, wide)
    assert buckets > bucket_count(10**6, 0) and wide / buckets <= BUCKET_BYTES
    assert plan_partitions(buckets) == buckets  # a reduce task holds one bucket of at most BUCKET_BYTES


def test_the_shuffle_is_chosen_on_the_plans_dataset_only(ray_local):
    import ray
    from ray.data.context import DataContext, ShuffleStrategy

    small, large = ray.data.range(3), ray.data.range(3)
    choose_shuffle(small, SMALL_PLAN_BUCKETS)
    choose_shuffle(large, SMALL_PLAN_BUCKETS + 1)
    assert small.context.shuffle_strategy == ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    assert not small.context.use_disk_based_hash_shuffle
    assert large.context.shuffle_strategy == ShuffleStrategy.SHUFFLE_V2 and large.context.use_disk_based_hash_shuffle
    assert not DataContext.get_current().use_disk_based_hash_shuffle  # other passes keep Ray Data's defaults


@pytest.mark.slow  # whole disk-shuffle passes on Ray (7 to 25 s): the slow tier
def test_a_plan_of_many_buckets_decides_through_the_disk_shuffle_as_through_the_sort_shuffle(
        ray_local, job_config, tmp_path, monkeypatch):
    """Small buckets force the hash shuffle on a small manifest: new rows, done rows, a revised prompt, and duplicate
    ids spread over buckets all end as they do in a plan of one bucket."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (32, 24), (60, 80, 90)).save(folder / "p.png")

    def manifest(rows: int, revised: str = "") -> str:
        table = [{"id": f"r{k:03d}", "image": str(folder / "p.png"), "source_prompt": "a photo",
                  "target_prompt": revised if revised and k == 7 else f"a painting {k}"} for k in range(rows)]
        table.append({"id": "r005", "image": str(folder / "p.png"), "source_prompt": "a photo",
                      "target_prompt": "a duplicate"})
        return str(write_manifest(tmp_path / f"manifest-{rows}-{bool(revised)}.parquet", table))

    partitions = []  # of each plan's shuffle, as the plan chose it

    def recording_shuffle(dataset, count):
        partitions.append(count)
        choose_shuffle(dataset, count)

    monkeypatch.setattr(planning, "choose_shuffle", recording_shuffle)
    noop = ("job.mode=noop", "model.resolution=64")
    results = {}
    for rows_per_bucket in (10**6, 5):  # one bucket (sort shuffle), then 9 and 21 (disk-based hash shuffle)
        monkeypatch.setattr(planning, "ROWS_PER_BUCKET", rows_per_bucket)
        output = str(tmp_path / f"out-{rows_per_bucket}")
        first = run_job(job_config(*noop), manifest(40), output)
        again = run_job(job_config(*noop), manifest(60, revised="a revised painting"), output)
        records = read_records(output)
        statuses = sorted((r["id"], r["status"], r["target_prompt"]) for r in records)
        results[rows_per_bucket] = ((first.ok, first.duplicates), (again.ok, again.skipped, again.changed,
                                                                   again.duplicates), statuses)
    assert partitions == [1, 1, 9, 21] and min(partitions[2:]) > SMALL_PLAN_BUCKETS
    one_bucket, many_buckets = results[10**6], results[5]
    # 20 new rows and r007 revised; r005's twin keeps its duplicate record
    assert one_bucket[:2] == ((40, 1), (21, 39, 1, 0))
    assert many_buckets == one_bucket


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


def _task_ids(dataset) -> set[str]:
    return set(dataset.unique("task"))


def _tagged(run):
    """`run` whose every output block names the Ray task that made it."""
    def tagged(*args, **kwargs):
        import ray

        for block in run(*args, **kwargs):
            yield block.append_column("task", pa.array([ray.get_runtime_context().get_task_id()] * block.num_rows))
    return tagged


def test_a_stage_of_one_item_a_task_keeps_it_before_a_stage_of_larger_batches(ray_local):
    """Ray Data fuses two task stages of equal resources and bundles the fused task's inputs to the larger batch
    size: a source read one file a task would read 64 of them in one task."""
    import ray

    from diffedit_batch.pipeline.stages.spec import Stage, apply, would_bundle_items

    def source(batch: pa.Table):
        import ray

        yield pa.table({"item": batch.column("item"), "task": [ray.get_runtime_context().get_task_id()]})

    def passed(batch: pa.Table) -> pa.Table:
        return batch

    read = Stage(name="read", run=source, reads=(), adds=(), cpus=0.25, batch_size=1, schema=None)
    batched = Stage(name="batched", run=passed, reads=(), adds=(), cpus=0.25, batch_size=64, schema=None)
    assert would_bundle_items(read, batched)
    items = ray.data.from_items([{"item": k} for k in range(4)], override_num_blocks=4)
    out = apply(items, [read, batched])
    assert len(_task_ids(out)) == 4 and sorted(out.unique("item")) == [0, 1, 2, 3]
    unfused = Stage(name="other cpus", run=passed, reads=(), adds=(), cpus=0.5, batch_size=64, schema=None)
    assert not would_bundle_items(read, unfused)  # not fused by Ray Data: nothing to keep apart
    blocks = Stage(name="blocks", run=passed, reads=(), adds=(), cpus=0.25, schema=None)
    assert not would_bundle_items(read, blocks)
    # a chain Ray Data fuses: a stage taking blocks as they come, then one of larger batches
    out = apply(ray.data.from_items([{"item": k} for k in range(4)], override_num_blocks=4), [read, blocks, batched])
    assert len(_task_ids(out)) == 4


def test_the_plan_reads_each_manifest_file_in_a_task_of_its_own(ray_local, tmp_path):
    """The requests of a manifest of several files are read and made in parallel, a task a file (they were one task
    for the whole manifest: a 10^7-row re-run's plan spent 300 s on one core)."""
    import dataclasses
    import json

    import ray

    from diffedit_batch.config import Config
    from diffedit_batch.data.manifest import inspect_manifest
    from diffedit_batch.pipeline.stages.spec import apply

    folder = tmp_path / "manifest"
    folder.mkdir()
    for part in range(3):
        _manifest(folder / f"part-{part}.parquet", 5000, 10)
    manifest = inspect_manifest(str(folder))
    stages = planning.plan_stages(Config(), manifest, buckets=4, output_prefix=str(tmp_path / "out"), run_id="r")
    read = dataclasses.replace(stages["read"], run=_tagged(stages["read"].run))
    requests = dataclasses.replace(stages["requests"], run=lambda batch, **kwargs: planning.plan_requests(
        batch.drop_columns(["task"]), **kwargs).append_column("task", batch.column("task")))
    files = ray.data.from_items([{"file": f.uri, "first_row": f.first_row, "class_offsets": json.dumps({})}
                                 for f in manifest.files], override_num_blocks=len(manifest.files))
    out = apply(files, [read, requests])
    assert len(_task_ids(out)) == 3 and out.count() == 15000


def test_the_plan_is_fused_into_the_disk_shuffles_reduce(ray_local, tmp_path):
    """The plan stage asks for what the hash shuffle's reduce tasks take, so Ray Data runs a bucket's fetch, sort and
    decision in one task (no hop through the object store; the plan's release of Arrow's pages also frees the
    reduce's)."""
    import ray

    from diffedit_batch.config import Config
    from diffedit_batch.data.manifest import inspect_manifest

    folder = tmp_path / "manifest"
    folder.mkdir()
    _manifest(folder / "part-0.parquet", 10, 10)
    stages = planning.plan_stages(Config(), inspect_manifest(str(folder)), buckets=9,
                                  output_prefix=str(tmp_path / "out"), run_id="r")
    decide = stages["plan"]
    rows = ray.data.from_items([{"bucket": k % 9, "value": k} for k in range(36)])
    choose_shuffle(rows, 9)
    sizes = rows.groupby("bucket", num_partitions=9).map_groups(
        lambda group: pa.table({"rows": [group.num_rows]}), batch_format="pyarrow", num_cpus=decide.cpus)
    assert sorted(sizes.take_all(), key=lambda row: row["rows"]) == [{"rows": 4}] * 9
    assert "DiskHashShuffleReduce(keys=('bucket',), partitions=9)->MapBatches(<lambda>)" in sizes.stats()
