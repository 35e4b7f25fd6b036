"""records: building and writing result parts, the resume index, and dropping superseded records."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffedit_batch.data import records
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.records import (
    RESULT_SCHEMA,
    drop_superseded,
    extend_result_schema,
    read_record_index,
    records_to_table,
    superseded_parts,
    write_record_part,
)
from diffedit_batch.data.storage import StorageOptions, list_files, output_key


def _record(record_id: str, status: str = "ok", run_id: str = "run-1", **extra) -> dict:
    record = {"id": record_id, "row_id": record_id.split("#")[0], "status": status, "run_id": run_id}
    if status == "error":
        record.update(error=f"{record_id} failed in {run_id}", error_class="engine")
    return record | extra


def _all_records(prefix: str) -> list[dict]:
    rows = []
    for part in list_files(os.path.join(prefix, "manifest"), ".parquet"):
        rows += pq.read_table(part).to_pylist()
    return rows


# --- building and writing ---------------------------------------------------------------------


def test_records_to_table_fills_nulls_and_time():
    before = dt.datetime.now(dt.timezone.utc)
    table = records_to_table([_record("a", seed=3, mask_coverage=0.25, width=64)])
    assert table.schema == RESULT_SCHEMA
    row = table.to_pylist()[0]
    assert row["seed"] == 3 and row["width"] == 64 and row["error"] is None and row["image_uri"] is None
    assert row["finished_at"] >= before.replace(microsecond=0)


def test_records_to_table_rejects_unknown_keys_and_statuses():
    with pytest.raises(ValueError, match="unknown fields: captoin"):
        records_to_table([_record("a", captoin="typo")])
    with pytest.raises(ValueError, match="status 'done'"):
        records_to_table([_record("a", status="done")])
    with pytest.raises(ValueError, match="record 0 has no run_id"):
        records_to_table([_record("a", run_id=None)])


def test_extend_result_schema_adds_nullable_columns_only():
    schema = extend_result_schema(pa.field("aesthetic_note", pa.string()), pa.field("clip_score", pa.float32()))
    assert schema.names[-2:] == ["aesthetic_note", "clip_score"]
    row = records_to_table([_record("a", aesthetic_note="a cat")], schema).to_pylist()[0]
    assert row["aesthetic_note"] == "a cat" and row["clip_score"] is None
    with pytest.raises(ValueError, match="already exists"):
        extend_result_schema(pa.field("seed", pa.int64()))
    with pytest.raises(ValueError, match="must be nullable"):
        extend_result_schema(pa.field("x", pa.int64(), nullable=False))


def test_output_layout():
    assert OutputLayout("s3://b/out").image("a/b") == f"s3://b/out/images/{output_key('a/b')}.png"
    assert OutputLayout("s3://b/out/").mask("x") == f"s3://b/out/masks/{output_key('x')}.png"
    layout = OutputLayout("/data/out/")
    assert layout.records == "/data/out/manifest" and layout.record_part("r1-x") == "/data/out/manifest/part-r1-x.parquet"
    assert layout.run_file("r1") == "/data/out/runs/r1.json" and layout.concepts_file("r1") == "/data/out/concepts/r1.parquet"
    assert (layout.report, layout.export) == ("/data/out/report", "/data/out/export")


def test_write_record_part(tmp_path):
    prefix = str(tmp_path / "out")
    uri = write_record_part(prefix, [_record("a"), _record("b", "error")], part_name="run-1-000")
    assert uri == f"{prefix}/manifest/part-run-1-000.parquet"
    assert os.listdir(tmp_path / "out" / "manifest") == ["part-run-1-000.parquet"]  # no temp left
    table = pq.read_table(uri)
    assert table.schema.equals(RESULT_SCHEMA) and table["status"].to_pylist() == ["ok", "error"]
    assert write_record_part(prefix, [], part_name="empty") is None
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError, match="part_name"):
            write_record_part(prefix, [_record("a")], part_name=bad)


# --- resume -----------------------------------------------------------------------------------


def test_index_reads_only_id_and_status(tmp_path, monkeypatch):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a"), _record("b", "error")], part_name="p1")
    (tmp_path / "manifest" / "notes.txt").write_text("ignored")
    read_columns = []
    real_read_table = pq.read_table

    def spy(*args, **kwargs):
        read_columns.append(kwargs.get("columns"))
        return real_read_table(*args, **kwargs)

    monkeypatch.setattr(records.pq, "read_table", spy)
    index = read_record_index(prefix)
    assert read_columns == [["id", "status"]]
    part = f"{prefix}/manifest/part-p1.parquet"
    assert index == {"a": ("ok", part), "b": ("error", part)}


def test_index_of_a_missing_manifest_is_empty(tmp_path):
    assert read_record_index(str(tmp_path / "never-ran")) == {}


@pytest.mark.parametrize("ok_first", [True, False])
def test_ok_wins_whatever_the_part_order(tmp_path, ok_first):
    prefix = str(tmp_path)
    parts = {"p1": [_record("x", "ok" if ok_first else "error")], "p2": [_record("x", "error" if ok_first else "ok")]}
    for name, recs in parts.items():
        write_record_part(prefix, recs, part_name=name)
    winner = "p1" if ok_first else "p2"
    index = read_record_index(prefix)
    assert index["x"] == ("ok", f"{prefix}/manifest/part-{winner}.parquet")


def test_resume_end_to_end_keeps_one_record_per_id(tmp_path):
    prefix = str(tmp_path / "out")
    # Run 1: a and d succeed; b, c, e fail.
    write_record_part(prefix, [_record("a"), _record("b", "error")], part_name="run1-0")
    write_record_part(prefix, [_record("c", "error"), _record("d")], part_name="run1-1")
    write_record_part(prefix, [_record("e", "error")], part_name="run1-2")

    # Run 2 edits what is not ok yet: the set difference.
    index_before = read_record_index(prefix)
    todo = {"a", "b", "c", "d", "e"} - {i for i, (status, _) in index_before.items() if status == "ok"}
    assert todo == {"b", "c", "e"}
    run2 = [_record("b", run_id="run-2"), _record("c", run_id="run-2"), _record("e", "error", run_id="run-2")]
    write_record_part(prefix, run2, part_name="run2-0")
    touched = drop_superseded(prefix, index_before, [r["id"] for r in run2])

    manifest = f"{prefix}/manifest"
    assert sorted(touched) == [f"{manifest}/part-run1-{k}.parquet" for k in range(3)]
    assert not os.path.exists(f"{manifest}/part-run1-2.parquet")  # emptied, so deleted
    rows = _all_records(prefix)
    assert Counter(r["id"] for r in rows) == {k: 1 for k in "abcde"}
    by_id = {r["id"]: r for r in rows}
    assert {k: by_id[k]["status"] for k in "abcde"} == {"a": "ok", "b": "ok", "c": "ok", "d": "ok", "e": "error"}
    assert by_id["e"]["error"] == "e failed in run-2" and by_id["b"]["run_id"] == "run-2"
    # Kept rows keep every column and the part keeps its schema.
    assert pq.read_table(f"{manifest}/part-run1-0.parquet").schema.equals(RESULT_SCHEMA)

    # Run 3 has nothing left but e; the index agrees with the files.
    assert read_record_index(prefix).shadowed == {}


def test_passing_only_ok_ids_keeps_old_errors_of_ids_that_failed_again(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("b", "error"), _record("e", "error")], part_name="run1")
    index_before = read_record_index(prefix)
    write_record_part(prefix, [_record("b", run_id="run-2")], part_name="run2")
    drop_superseded(prefix, index_before, ["b"])
    assert sorted((r["id"], r["status"]) for r in _all_records(prefix)) == [("b", "ok"), ("e", "error")]


def test_leftovers_of_an_interrupted_run_are_dropped_next_time(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a", "error"), _record("z")], part_name="run1")
    write_record_part(prefix, [_record("a", run_id="run-2")], part_name="run2")
    # Run 2 stopped before drop_superseded; run 3 finds the stale error record.
    index = read_record_index(prefix)
    part1 = f"{prefix}/manifest/part-run1.parquet"
    assert index["a"] == ("ok", f"{prefix}/manifest/part-run2.parquet")
    assert index.shadowed == {part1: {"a"}}
    assert superseded_parts(index, []) == {part1: {"a"}}
    drop_superseded(prefix, index, [])
    assert sorted((r["id"], r["status"]) for r in _all_records(prefix)) == [("a", "ok"), ("z", "ok")]


def test_duplicate_records_do_not_shadow_or_win(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a"), _record("a", "duplicate", error_class="duplicate_id")], part_name="p1")
    write_record_part(prefix, [_record("b", "duplicate")], part_name="p2")
    write_record_part(prefix, [_record("b")], part_name="p3")
    index = read_record_index(prefix)
    assert index["a"][0] == "ok" and index["b"][0] == "ok"
    assert index.shadowed == {}


def test_drop_superseded_refuses_parts_outside_the_prefix(tmp_path):
    write_record_part(str(tmp_path / "one"), [_record("a", "error")], part_name="p")
    index = read_record_index(str(tmp_path / "one"))
    with pytest.raises(ValueError, match="not under"):
        drop_superseded(str(tmp_path / "two"), index, ["a"])


def test_parts_with_an_extended_schema_index_alongside_old_ones(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a", "error")], part_name="old")
    index_before = read_record_index(prefix)
    schema = extend_result_schema(pa.field("aesthetic_note", pa.string()))
    write_record_part(prefix, [_record("a", aesthetic_note="a cat", run_id="run-2")], StorageOptions(), "new", schema)
    assert read_record_index(prefix)["a"] == ("ok", f"{prefix}/manifest/part-new.parquet")
    drop_superseded(prefix, index_before, ["a"])
    [row] = _all_records(prefix)
    assert row["aesthetic_note"] == "a cat" and row["status"] == "ok"
