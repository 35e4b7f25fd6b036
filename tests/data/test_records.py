"""records: building and writing result parts, finding the record files, reading them back."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffedit_batch.data import records
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.records import (
    REPLACES_KEY,
    RESULT_SCHEMA,
    extend_result_schema,
    list_record_files,
    read_footers,
    read_record_file,
    record_files,
    record_from_row,
    records_to_table,
    write_record_part,
)
from diffedit_batch.data.storage import StorageError, output_key


def _record(record_id: str, status: str = "ok", run_id: str = "run-1", **extra) -> dict:
    record = {"id": record_id, "row_id": record_id.split("#")[0], "status": status, "run_id": run_id}
    if status == "error":
        record.update(error=f"{record_id} failed in {run_id}", error_class="engine")
    return record | extra


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
    assert layout.work_file("r1", "work-00003") == "/data/out/_work/r1/work-00003.parquet"


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


# --- reading -------------------------------------------------------------------------------------


def test_record_files_are_every_parquet_under_manifest_but_temp_and_underscore_names(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a")], part_name="p1")
    folder = tmp_path / "manifest"
    (folder / "copies" / "2026").mkdir(parents=True)
    pq.write_table(records_to_table([_record("b")]), folder / "copies" / "2026" / "external.parquet")
    pq.write_table(records_to_table([_record("c")]), folder / ".part-x.parquet.123.tmp.parquet")
    (folder / "_scratch").mkdir()
    pq.write_table(records_to_table([_record("d")]), folder / "_scratch" / "w.parquet")
    (folder / "notes.txt").write_text("ignored")
    files = record_files(prefix)
    assert [f.name for f in files] == ["copies/2026/external.parquet", "part-p1.parquet"]
    assert all(f.size == os.path.getsize(f.uri) and f.rows is None for f in files)
    assert record_files(str(tmp_path / "never-ran")) == []


def test_footers_give_row_counts_and_what_a_merged_file_replaces(tmp_path):
    prefix = str(tmp_path)
    write_record_part(prefix, [_record("a"), _record("b")], part_name="small-1")
    write_record_part(prefix, [_record("c")], part_name="small-2")
    merged = records_to_table([_record("a"), _record("b"), _record("c")]).replace_schema_metadata(
        {REPLACES_KEY: json.dumps(["part-small-1.parquet"]).encode()})
    pq.write_table(merged, tmp_path / "manifest" / "records-x.parquet")
    found = list_record_files(prefix)
    assert {f.name: (f.rows, f.replaces) for f in found.live} == {
        "part-small-2.parquet": (1, ()), "records-x.parquet": (3, ("part-small-1.parquet",))}
    assert [f.name for f in found.dead] == ["part-small-1.parquet"]


def test_read_record_file_conforms_old_and_foreign_files_to_the_schema(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "status": ["ok"], "seed": pa.array([3], pa.int32()), "mine": ["x"]}),
                   tmp_path / "foreign.parquet")
    [file] = read_footers([records.RecordFile(str(tmp_path / "foreign.parquet"),
                                              os.path.getsize(tmp_path / "foreign.parquet"), "foreign.parquet")])
    table = read_record_file(file)
    assert table.schema == records.RECORD_SCHEMA
    row = table.to_pylist()[0]
    assert (row["id"], row["seed"], row["background_psnr"]) == ("a", 3, None)
    assert read_record_file(file, columns=["id", "status"]).column_names == ["id", "status"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(StorageError, match="broken.parquet"):
        read_record_file(records.RecordFile(str(tmp_path / "broken.parquet"), 15, "broken.parquet"))


def test_record_from_row_keeps_outputs_and_metrics_only_when_ok():
    row = {"edit_id": "a#1", "row_id": "a", "status": "error", "error": "boom", "error_class": "engine",
           "image_uri": "/x.png", "mask_coverage": 0.5, "background_psnr": 30.0, "seed": 4}
    record = record_from_row(row, "model", "run-1")
    assert (record["id"], record["row_id"], record["image_uri"], record["mask_coverage"]) == ("a#1", "a", None, None)
    assert record["background_psnr"] is None and record["seed"] == 4 and record["run_id"] == "run-1"
    ok = record_from_row({**row, "status": "ok", "error": None, "error_class": None}, "model", "run-1")
    assert (ok["image_uri"], ok["mask_coverage"], ok["background_psnr"]) == ("/x.png", 0.5, 30.0)
    records_to_table([record, ok], records.RECORD_SCHEMA)  # both fit the schema the job writes
