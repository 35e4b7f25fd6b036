"""worklist: the run's plan, bucket by bucket, without Ray: resume, duplicates in manifest order, supersession."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffedit_batch.data.records import RECORD_SCHEMA, records_to_table, write_record_part
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.worklist import (
    PLAN_SCHEMA,
    REQUEST_SCHEMA,
    bucket_of,
    plan_bucket,
    records_to_plan_rows,
    requests_to_plan_rows,
    write_bucket_plan,
)
from diffedit_batch.seeds import derive_seed

MANIFEST = pa.schema([("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string()),
                      ("target_prompt", pa.string()), ("target_prompts", pa.list_(pa.string())),
                      ("seed", pa.uint64()), ("source_concept", pa.string()), ("target_concept", pa.string())])


def manifest_rows(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist([{name: row.get(name) for name in MANIFEST.names} for row in rows], schema=MANIFEST)
    return table.append_column("row_index", pa.array(range(len(rows)), pa.int64()))


def earlier(records: list[dict], file: str = "part-earlier.parquet", buckets: int = 1) -> pa.Table:
    table = pa.Table.from_pylist([{"id": r["id"], "row_id": r.get("row_id", r["id"]), "status": r["status"]}
                                  for r in records],
                                 schema=pa.schema([("id", pa.string()), ("row_id", pa.string()), ("status", pa.string())]))
    return records_to_plan_rows(table, file=file, buckets=buckets)


def plan(rows: list[dict], records: pa.Table | None = None, buckets: int = 1, shuffle_seed: int | None = 0):
    """Plan rows as the shuffle delivers them (in any order), decided bucket by bucket."""
    table = requests_to_plan_rows(manifest_rows(rows), base_dir="/data", job_seed=3, buckets=buckets)
    if records is not None:
        table = pa.concat_tables([table, records])
    order = list(range(table.num_rows))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    table = table.take(pa.array(order))
    return [
        plan_bucket(table.filter(pc.equal(table["bucket"], bucket)), caption_inversion=False, model_id="m",
                    run_id="run-2")
        for bucket in range(buckets)
    ]


def good(row_id, **extra):
    return {"id": row_id, "image": f"{row_id}.png", "source_prompt": "a", "target_prompt": "b", **extra}


def test_requests_are_expanded_validated_and_seeded():
    table = requests_to_plan_rows(manifest_rows([
        good("a"),
        {"id": "multi", "image": "/abs/m.png", "source_prompt": "a", "target_prompts": ["x", "y"], "seed": 7},
        good("huge-seed", seed=2**64 - 1),
        good("a#1"),
        good(None),
    ]), base_dir="/data", job_seed=3, buckets=4)
    assert table.schema == PLAN_SCHEMA
    rows = {(r["edit_id"], r["row_index"]): r for r in table.to_pylist()}
    a = rows[("a", 0)]
    assert (a["status"], a["source_image_uri"], a["seed"], a["bucket"]) == ("pending", "/data/a.png",
                                                                             derive_seed(3, "a"), bucket_of("a", 4))
    assert [rows[(f"multi#{k}", 1)]["target_prompt"] for k in (0, 1)] == ["x", "y"]
    assert {rows[(f"multi#{k}", 1)]["seed"] for k in (0, 1)} == {7}
    huge = rows[("huge-seed", 2)]
    assert (huge["status"], huge["error_class"], huge["seed"]) == ("error", "invalid_row", None) and "2**63" in huge["error"]
    reserved = rows[("a#1", 3)]  # the form of a generated edit id: refused, so it never collides with multi#1
    assert reserved["error_class"] == "invalid_row" and "reserved" in reserved["error"]
    assert rows[(None, 4)]["error"] == "row has no id" and rows[(None, 4)]["bucket"] == 0


def test_buckets_are_stable_and_spread():
    assert bucket_of("cat", 64) == bucket_of("cat", 64) and bucket_of(None, 64) == bucket_of("", 64) == 0
    assert len({bucket_of(f"id-{k}", 16) for k in range(400)}) == 16


def test_the_first_row_in_manifest_order_is_edited_whatever_the_order_rows_arrive_in():
    rows = [good("dup", image="first.png"), good("other"), good("dup", image="second.png"), good("dup", image="third.png")]
    for shuffle_seed in range(5):
        [bucket] = plan(rows, shuffle_seed=shuffle_seed)
        work = bucket.work.to_pylist()
        assert [(r["edit_id"], r["source_image_uri"]) for r in work] == [("dup", "/data/first.png"), ("other", "/data/other.png")]
        duplicates = sorted(r["source_image_uri"] for r in bucket.records if r["status"] == Status.DUPLICATE)
        assert duplicates == ["/data/second.png", "/data/third.png"] and bucket.duplicates == 2
        assert all(r["error_class"] == ErrorClass.DUPLICATE_ID and "manifest row 0" in r["error"]
                   for r in bucket.records)


def test_targets_of_a_row_stay_together_in_manifest_order_across_buckets():
    rows = [good(f"r{k}") for k in range(30)] + [{"id": "multi", "image": "m.png", "source_prompt": "a",
                                                   "target_prompt": "t", "target_prompts": ["x", "y"]}]
    buckets = plan(rows, buckets=4)
    assert sum(b.pending for b in buckets) == 33
    for b in buckets:
        indexes = [(r["row_index"], r["target_index"] if r["target_index"] is not None else -1) for r in b.work.to_pylist()]
        assert indexes == sorted(indexes)
    [multi] = [b for b in buckets if "multi" in b.work.column("row_id").to_pylist()]
    assert [r["edit_id"] for r in multi.work.to_pylist() if r["row_id"] == "multi"] == ["multi", "multi#0", "multi#1"]


def test_done_edits_are_skipped_and_errors_are_retried_and_superseded():
    records = earlier([{"id": "done", "status": "ok"}, {"id": "failed", "status": "error"},
                       {"id": "multi#1", "row_id": "multi", "status": "ok"},
                       {"id": "leftover", "status": "error"}, {"id": "leftover", "status": "ok"},
                       {"id": None, "row_id": None, "status": "error"}])
    rows = [good("done"), good("failed"), good("leftover"),
            {"id": "multi", "image": "m.png", "source_prompt": "a", "target_prompts": ["x", "y"]}]
    [bucket] = plan(rows, records)
    assert sorted(bucket.work.column("edit_id").to_pylist()) == ["failed", "multi#0"]
    assert bucket.skipped == 3 and bucket.records == []
    superseded = sorted((r["id"] or "", r["status"]) for r in bucket.superseded.to_pylist())
    # the retried edit's old error, the error an ok record already replaced, and the record without an id
    assert superseded == [("", "error"), ("failed", "error"), ("leftover", "error")]
    assert set(bucket.superseded.column("file").to_pylist()) == {"part-earlier.parquet"}


def test_duplicates_are_recorded_once_and_again_only_when_their_number_changes():
    rows = [good("d", image="1.png"), good("d", image="2.png")]
    [first] = plan(rows)
    assert first.duplicates == 1 and first.superseded.num_rows == 0
    done = earlier([{"id": "d", "status": "ok"}, {"id": "d", "status": "duplicate"}])
    [again] = plan(rows, done)
    assert (again.pending, again.skipped, again.duplicates, again.records) == (0, 1, 0, [])
    [more] = plan(rows + [good("d", image="3.png")], done)
    assert more.duplicates == 2 and [(r["id"], r["status"]) for r in more.superseded.to_pylist()] == [("d", "duplicate")]


def test_invalid_rows_are_recorded_each_run_and_replace_their_earlier_record():
    rows = [good("no-target", target_prompt=None), good(None)]
    [bucket] = plan(rows, earlier([{"id": "no-target", "status": "error"}]))
    assert bucket.invalid == 2 and bucket.pending == 0
    assert sorted((r["id"] or "", r["error_class"]) for r in bucket.records) == [("", "invalid_row"),
                                                                              ("no-target", "invalid_row")]
    assert [r["id"] for r in bucket.superseded.to_pylist()] == ["no-target"]
    records_to_table(bucket.records, schema=RECORD_SCHEMA)  # the records fit the schema the job writes


def test_concepts_and_captions_needed_come_from_the_work_rows():
    rows = [good("a", source_prompt=None, source_concept="bowl", target_prompt=None, target_concept="basket"),
            good("b", source_prompt="  ", target_prompt="t"),
            good("c", source_prompt=None, source_concept=" bowl ", target_concept="cat", target_prompt=None),
            good("done", source_prompt=None, target_concept="never", target_prompt=None)]
    [bucket] = plan(rows, earlier([{"id": "done", "status": "ok"}]))
    assert bucket.concepts == ["bowl", "basket", "cat"]
    assert bucket.captions_needed == 1  # "b": no source prompt nor concept


def test_write_bucket_plan_leaves_work_records_and_superseded_files(tmp_path):
    prefix = str(tmp_path / "out")
    write_record_part(prefix, [{"id": "failed", "row_id": "failed", "status": "error", "run_id": "run-1"}],
                      part_name="run-1")
    [bucket] = plan([good("failed"), good("new"), good("bad", target_prompt=None)],
                    earlier([{"id": "failed", "status": "error"}], file="part-run-1.parquet"))
    summary = write_bucket_plan(bucket, prefix, "run-2", None)
    assert (summary["pending"], summary["invalid"]) == (2, 1)
    work = pq.read_table(summary["work_uri"])
    assert work.schema == REQUEST_SCHEMA and work.column("edit_id").to_pylist() == ["failed", "new"]
    assert summary["work_uri"].startswith(f"{prefix}/_work/run-2/")
    assert pq.read_table(summary["superseded_uri"]).to_pylist() == [
        {"file": "part-run-1.parquet", "id": "failed", "status": "error"}]
    recorded = pq.read_table(f"{prefix}/manifest/part-run-2-plan-00000.parquet").to_pylist()
    assert [(r["id"], r["status"], r["run_id"]) for r in recorded] == [("bad", "error", "run-2")]
