"""The edit pass of an input that embeds its pictures: spans of the input joined to the work list, the pictures read
there once, never through the plan (issue 35)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.config import InputConfig
from diffedit_batch.data.inputs import inspect_input, read_input_rows
from diffedit_batch.data.status import Status
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.data.worklist import REQUEST_SCHEMA, requests_to_plan_rows
from diffedit_batch.pipeline.rows import WORK_SCHEMA
from diffedit_batch.pipeline.stages.fetch import fetch_images
from diffedit_batch.pipeline.stages.read import embedded_spans, read_embedded_work
from diffedit_batch.testing.labelled import labelled_rows, wds_sample, write_hf_parquet, write_shard

OPTIONS = StorageOptions()


def _work_file(manifest, path, keep=lambda row: True) -> str:
    """The manifest's requests as one work file, as a bucket of the plan writes it (sorted by row_index)."""
    files = pa.table({"file": [f.uri for f in manifest.files], "first_row": [f.first_row for f in manifest.files]})
    tables = [requests_to_plan_rows(t, base_dir=None, job_seed=0, buckets=1)
              for t in read_input_rows(files, options=OPTIONS, spec=manifest.spec)]
    plan = pa.concat_tables(tables)
    assert plan.column("row_index").to_pylist() == sorted(plan.column("row_index").to_pylist())
    rows = [row for row in plan.select(REQUEST_SCHEMA.names).to_pylist() if keep(row)]
    pq.write_table(pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA), path, row_group_size=2)
    return str(path)


def _read(spans, work, image):
    tables = list(read_embedded_work(pa.Table.from_pylist(spans), options=OPTIONS, work_files=[work], image=image))
    assert all(table.schema == WORK_SCHEMA for table in tables)
    return [row for table in tables for row in table.to_pylist()]


def test_parquet_pictures_are_read_by_row_group_for_the_rows_to_do_only(tmp_path):
    rows = labelled_rows(7)
    path = write_hf_parquet(tmp_path / "train.parquet", rows)
    pq.write_table(pq.read_table(path), path, row_group_size=3)  # 3 row groups: 3, 3, 1
    manifest = inspect_input(str(path), InputConfig(carry_columns=("label",)))
    spans = embedded_spans(manifest, OPTIONS)
    assert [(span["low"], span["high"], span["groups"]) for span in spans] == [(0, 7, [0, 1, 2])]
    work = _work_file(manifest, tmp_path / "work.parquet", keep=lambda row: row["row_index"] in (1, 5))
    read = _read(spans, work, "struct")
    assert [row["row_id"] for row in read] == ["train.parquet:1", "train.parquet:5"]
    assert [row["source_image_bytes"] for row in read] == [rows[1]["image"], rows[5]["image"]]
    assert read[0]["carried"] == '{"label": 1}'
    # a span with nothing to do reads nothing
    empty = _work_file(manifest, tmp_path / "none.parquet", keep=lambda row: False)
    assert _read(spans, empty, "struct") == []


def test_webdataset_pictures_are_streamed_from_their_shard(tmp_path):
    (tmp_path / "s").mkdir()
    write_shard(tmp_path / "s" / "0.tar", [wds_sample(f"k{i}", i) for i in range(3)])
    write_shard(tmp_path / "s" / "1.tar", [wds_sample("k3", 3)])
    manifest = inspect_input(str(tmp_path / "s"))
    spans = embedded_spans(manifest, OPTIONS)
    assert [span["file"] for span in spans] == [str(tmp_path / "s" / "0.tar"), str(tmp_path / "s" / "1.tar")]
    work = _work_file(manifest, tmp_path / "work.parquet", keep=lambda row: row["row_id"] != "k1")
    read = _read(spans, work, "member")
    assert [row["row_id"] for row in read] == ["k0", "k2", "k3"]
    assert read[1]["source_image_bytes"] == wds_sample("k2", 2)["k2.jpg"]


def test_fetch_decodes_the_embedded_bytes_and_names_undecodable_ones(tmp_path):
    good = labelled_rows(1)[0]["image"]
    batch = pa.Table.from_pylist([
        {"edit_id": "a", "status": Status.PENDING, "source_image_uri": "x.parquet#row=0", "source_image_bytes": good},
        {"edit_id": "b", "status": Status.PENDING, "source_image_uri": "x.parquet#row=1",
         "source_image_bytes": b"not a picture"},
    ], schema=WORK_SCHEMA)
    out = {row["edit_id"]: row for row in fetch_images(batch, options=OPTIONS, resolution=32,
                                                        max_pixels=10**6).to_pylist()}
    assert out["a"]["status"] == Status.PENDING and (out["a"]["width"], out["a"]["height"]) == (48, 32)
    assert out["a"]["source_image_bytes"] is None  # dropped once decoded: no shard asks for the source
    assert out["b"]["status"] == Status.ERROR and out["b"]["error_class"] == "image_decode"
