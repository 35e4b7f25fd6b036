"""worklist: the run's plan, bucket by bucket, without Ray: resume, duplicates in manifest order, supersession."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffedit_batch.data.records import RECORD_SCHEMA, records_to_table, write_record_part
from diffedit_batch.data.fingerprints import request_fingerprint
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
    """Earlier records as the plan reads them; with fingerprints only when some record has them (older files have
    no such columns)."""
    names = ["id", "row_id", "status"]
    if any("request_fingerprint" in r for r in records):
        names += ["request_fingerprint", "settings_fingerprint"]
    table = pa.Table.from_pylist([{"row_id": r["id"], **r} for r in records],
                                 schema=pa.schema([(name, pa.string()) for name in names]))
    return records_to_plan_rows(table, file=file, buckets=buckets)


SETTINGS = ("s-base", "s-caption", "s-concepts", "s-concepts-caption")


def made(rows: list[dict], settings=SETTINGS, status: str = "ok") -> list[dict]:
    """The records a run under `settings` left for `rows`: each edit's fingerprints as the plan computes them."""
    table = requests_to_plan_rows(manifest_rows(rows), base_dir="/data", job_seed=3, buckets=1, settings=settings)
    return [{"id": r["edit_id"], "row_id": r["row_id"], "status": status,
             "request_fingerprint": r["request_fingerprint"], "settings_fingerprint": r["settings_fingerprint"]}
            for r in table.to_pylist()]


def plan(rows: list[dict], records: pa.Table | None = None, buckets: int = 1, shuffle_seed: int | None = 0,
         settings=SETTINGS, **policies):
    """Plan rows as the shuffle delivers them (in any order), decided bucket by bucket."""
    table = requests_to_plan_rows(manifest_rows(rows), base_dir="/data", job_seed=3, buckets=buckets,
                                  settings=settings)
    if records is not None:
        table = pa.concat_tables([table, records])
    order = list(range(table.num_rows))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    table = table.take(pa.array(order))
    return [
        plan_bucket(table.filter(pc.equal(table["bucket"], bucket)), caption_inversion=False, model_id="m",
                    run_id="run-2", **policies)
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
    # the earlier error of an edit this run's edit pass tries again: removed once its new record exists
    assert pq.read_table(summary["superseded_uri"]).to_pylist() == [
        {"file": "part-run-1.parquet", "id": "failed", "status": "error", "request_id": "failed", "pending": True,
         "keep_files": False}]
    recorded = pq.read_table(f"{prefix}/manifest/part-run-2-plan-00000.parquet").to_pylist()
    assert [(r["id"], r["status"], r["run_id"]) for r in recorded] == [("bad", "error", "run-2")]


def test_requests_carry_their_fingerprints_and_the_settings_of_what_they_use():
    rows = [good("plain"), good("concept", target_prompt=None, target_concept="cat"),
            good("captioned", source_prompt=None), {**good("multi"), "target_prompts": ["x", "y"]}]
    table = requests_to_plan_rows(manifest_rows(rows), base_dir="/data", job_seed=3, buckets=1, settings=SETTINGS)
    by_id = {r["edit_id"]: r for r in table.to_pylist()}
    assert by_id["plain"]["settings_fingerprint"] == "s-base"
    assert by_id["concept"]["settings_fingerprint"] == "s-concepts"
    assert by_id["captioned"]["settings_fingerprint"] == "s-caption"  # no source: a BLIP caption stands in
    assert by_id["plain"]["request_fingerprint"] == request_fingerprint(by_id["plain"])
    # every input of the request counts, so each target of a row is its own request
    assert len({by_id[k]["request_fingerprint"] for k in ("multi", "multi#0", "multi#1")}) == 3
    for change in ({"target_prompt": "c"}, {"source_prompt": "z"}, {"image": "other.png"}, {"seed": 9}):
        [changed] = requests_to_plan_rows(manifest_rows([{**good("plain"), **change}]), base_dir="/data", job_seed=3,
                                          buckets=1, settings=SETTINGS).to_pylist()
        assert changed["request_fingerprint"] != by_id["plain"]["request_fingerprint"], change
    # the job seed reaches a row without a seed of its own through its derived seed
    [reseeded] = requests_to_plan_rows(manifest_rows([good("plain")]), base_dir="/data", job_seed=4, buckets=1,
                                       settings=SETTINGS).to_pylist()
    assert reseeded["request_fingerprint"] != by_id["plain"]["request_fingerprint"]


def test_an_edit_is_done_only_for_the_same_request_under_the_same_settings():
    rows = [good("same"), good("revised"), good("new")]
    records = earlier(made([good("same"), good("revised", target_prompt="the old prompt")]))
    [bucket] = plan(rows, records)
    assert bucket.work.column("edit_id").to_pylist() == ["revised", "new"]
    assert (bucket.skipped, bucket.changed, bucket.settings_changed, bucket.unknown_settings) == (1, 1, 0, 0)
    # the revised row's earlier ok record is superseded: the edit done again replaces it
    assert [(r["id"], r["status"]) for r in bucket.superseded.to_pylist()] == [("revised", "ok")]
    # the work list carries the fingerprints on to the records the edit pass writes
    work = {r["edit_id"]: r for r in bucket.work.to_pylist()}
    assert work["revised"]["settings_fingerprint"] == "s-base" and work["revised"]["request_fingerprint"]


def test_other_settings_are_planned_by_the_policy_and_named():
    rows = [good("a"), good("b")]
    records = earlier(made(rows, settings=("old-base", "old-caption", "old-concepts", "old-both")))
    [stop] = plan(rows, records)  # stop: planned as redo, the driver refuses the run
    assert (stop.pending, stop.skipped, stop.settings_changed, stop.changed) == (2, 0, 2, 0)
    assert stop.settings_changes == ["old-base:s-base"]
    [redo] = plan(rows, records, settings_policy="redo")
    assert redo.pending == 2 and sorted(r["id"] for r in redo.superseded.to_pylist()) == ["a", "b"]
    [keep] = plan(rows, records, settings_policy="keep")
    assert (keep.pending, keep.skipped, keep.settings_changed, keep.superseded.num_rows) == (0, 2, 2, 0)
    # a request that changed is edited again whatever the policy says about settings
    [revised] = plan([good("a", target_prompt="new"), good("b")], records, settings_policy="keep")
    assert revised.work.column("edit_id").to_pylist() == ["a"] and revised.changed == 1


def test_records_from_before_fingerprints_are_kept_unless_redone():
    rows = [good("old"), good("new")]
    records = earlier([{"id": "old", "status": "ok"}])  # a file without fingerprint columns
    [kept] = plan(rows, records)
    assert (kept.pending, kept.skipped, kept.unknown_settings) == (1, 1, 1)
    [redone] = plan(rows, records, settings_policy="redo", unknown_policy="redo")
    assert redone.work.column("edit_id").to_pylist() == ["old", "new"]
    assert [(r["id"], r["status"]) for r in redone.superseded.to_pylist()] == [("old", "ok")]


def test_an_ok_record_outlived_by_one_of_the_same_request_and_settings_is_superseded():
    rows = [good("a")]
    stale = earlier(made([good("a", target_prompt="old")]), file="part-old.parquet")
    fresh = earlier(made(rows), file="part-new.parquet")
    [bucket] = plan(rows, pa.concat_tables([stale, fresh]))
    assert (bucket.pending, bucket.skipped) == (0, 1)
    # settled by the plan (no edit of this run replaces it); its files go with it unless the record that outlived
    # it was written before records held their picture's identity (it may name the same files)
    assert bucket.superseded.to_pylist() == [{"file": "part-old.parquet", "id": "a", "status": "ok",
                                              "request_id": "a", "pending": False, "keep_files": True}]
    # in the same file as the match, the stale one stays (a file's records are removed by id and status)
    [together] = plan(rows, earlier(made([good("a", target_prompt="old")]) + made(rows), file="part-both.parquet"))
    assert together.superseded.num_rows == 0 and together.skipped == 1


def candidates_of(records: list[dict], count: int, statuses: tuple[str, ...]) -> pa.Table:
    """The records a run with `count` candidates per request left: ids `id~cK`, the request's fingerprints."""
    rows = [{**record, "id": f"{record['id']}~c{k}", "candidate": k, "status": statuses[k % len(statuses)]}
            for record in records for k in range(count)]
    schema = pa.schema([(name, pa.string()) for name in ("id", "row_id", "status", "request_fingerprint",
                                                         "settings_fingerprint")] + [("candidate", pa.int32())])
    return records_to_plan_rows(pa.Table.from_pylist(rows, schema=schema), file="part-candidates.parquet", buckets=1)


def test_a_candidates_records_count_for_its_request_kept_or_filtered():
    rows = [good("a"), good("b")]
    # a: one kept, two filtered; b: none passed a floor (all filtered): both requests are done
    records = pa.concat_tables([
        candidates_of(made([rows[0]]), 3, (Status.OK, Status.FILTERED, Status.FILTERED)),
        candidates_of(made([rows[1]]), 3, (Status.FILTERED,)),
    ])
    [decided] = plan(rows, records)
    assert (decided.pending, decided.skipped) == (0, 2) and decided.superseded.num_rows == 0


def test_a_request_done_again_supersedes_all_its_candidates_records():
    rows = [good("a")]
    records = candidates_of(made([rows[0]]), 3, (Status.OK, Status.FILTERED, Status.FILTERED))
    [decided] = plan([good("a", target_prompt="a revised target")], records)
    assert (decided.pending, decided.changed) == (1, 1)
    superseded = sorted(zip(decided.superseded["id"].to_pylist(), decided.superseded["status"].to_pylist()))
    assert superseded == [("a~c0", Status.OK), ("a~c1", Status.FILTERED), ("a~c2", Status.FILTERED)]


def test_request_ids_of_candidate_records():
    from diffedit_batch.data.worklist import request_id_of

    assert request_id_of("row#2~c3", 3) == "row#2" and request_id_of("x~c1", None) == "x~c1"
    assert request_id_of("odd~c12", 2) == "odd~c12"  # not its own candidate's suffix: taken as it is


def with_identity(records: list[dict], identities: dict[str, str | None]) -> pa.Table:
    """Earlier records as `earlier` makes them, with the identity of each one's picture (None: not recorded)."""
    table = pa.Table.from_pylist([{**r, "source_identity": identities.get(r["id"])} for r in records])
    return records_to_plan_rows(table, file="part-earlier.parquet", buckets=1)


def test_a_done_edit_whose_picture_changed_under_its_uri_is_done_again_with_files_of_its_own():
    rows = [good("same"), good("replaced"), good("gone"), good("old")]
    records = with_identity(made(rows), {"same": "size:1", "replaced": "size:2", "gone": "size:3"})
    asked = []

    def identify(uris):
        asked.append(list(uris))
        return [{"/data/same.png": "size:1", "/data/replaced.png": "size:9"}.get(uri) for uri in uris]

    [bucket] = plan(rows, records, identify=identify)
    # one call for the bucket's done pictures with an identity recorded; `old` (none recorded) is not asked
    assert sorted(asked[0]) == ["/data/gone.png", "/data/replaced.png", "/data/same.png"] and len(asked) == 1
    assert bucket.work.column("edit_id").to_pylist() == ["replaced", "gone"]
    assert (bucket.skipped, bucket.changed, bucket.sources_changed, bucket.unverified) == (2, 2, 2, 1)
    # done again under a name of its own: the earlier record names its own files until it is removed
    assert bucket.work.column("output_tag").to_pylist() == ["run-2", "run-2"]
    assert sorted((r["id"], r["pending"]) for r in bucket.superseded.to_pylist()) == [("gone", True),
                                                                                      ("replaced", True)]
    # without the check (job.verify_sources: false) every one stays done
    [unchecked] = plan(rows, records)
    assert (unchecked.pending, unchecked.skipped, unchecked.changed) == (0, 4, 0)


def test_a_new_selection_chooses_again_from_the_recorded_scores():
    from diffedit_batch.data.reselect import Selection

    rows = [good("a"), good("b")]
    [record_a] = made([rows[0]])
    [record_b] = made([rows[1]])
    scored = []
    for record, written in ((record_a, (True, True, False)), (record_b, (True, False, False))):
        for k, coverage in enumerate((0.2, 0.5, 0.9)):
            scored.append({**record, "id": f"{record['id']}~c{k}", "candidate": k,
                           "status": Status.OK if written[k] else Status.FILTERED, "mask_coverage": coverage,
                           "image_uri": f"/out/images/{record['id']}{k}.png" if written[k] else None})
    table = records_to_plan_rows(pa.Table.from_pylist(scored), file="part-c.parquet", buckets=1)
    # a run kept a~c0 and a~c1 (their pictures written); now keep 1 by coverage, at most 0.6: c1 (0.5)
    selection = Selection(keep=1, rank_by="mask_coverage", floors={}, ceilings={"mask_coverage": 0.6},
                          keep_rejected=False)
    [bucket] = plan(rows, table, selection=selection)
    # a: c1 stays kept, c0 is demoted (its pictures go); b: c1 to keep has no picture: b is edited again
    assert bucket.work.column("edit_id").to_pylist() == ["b"] and bucket.changed == 1
    changes = sorted((r["id"], r["status"], r["new_status"], r["drop_files"]) for r in bucket.reselected.to_pylist())
    assert changes == [("a~c0", "ok", "filtered", True)] and bucket.reselected_requests == 1
