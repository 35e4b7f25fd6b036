"""Superseded records are removed by a Ray Data pass grouped by record file: each task holds one file's keys."""

from __future__ import annotations

import pytest

import pyarrow as pa
import pyarrow.dataset as ds

from diffedit_batch.data.compaction import SUPERSEDED_SCHEMA, compact_records
from diffedit_batch.data.records import list_record_files, parquet_bytes, write_record_part
from diffedit_batch.pipeline import supersede
from diffedit_batch.pipeline.supersede import remove_superseded, rewrite_record_file


def _records(prefix, name: str, ids: list[str], status: str = "ok") -> None:
    write_record_part(str(prefix), [{"id": i, "row_id": i, "status": status, "run_id": "r1"} for i in ids],
                      part_name=name)


def _bucket_file(folder, bucket: int, keys: list[tuple[str, str | None, str]]) -> str:
    """A plan bucket's superseded file: (record file, id, status) rows."""
    path = folder / f"superseded-{bucket:05d}.parquet"
    table = pa.Table.from_pylist([dict(zip(("file", "id", "status"), key)) for key in keys], schema=SUPERSEDED_SCHEMA)
    path.write_bytes(parquet_bytes(table))
    return str(path)


def _ids(prefix) -> list[str]:
    return sorted(ds.dataset(str(prefix / "manifest"), format="parquet").to_table().column("id").to_pylist())


def test_keys_of_one_record_file_from_many_buckets_meet_in_one_rewrite(ray_local, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    _records(out, "a", [f"a{i}" for i in range(6)])
    _records(out, "b", ["b0", "b1"], status="error")
    _records(out, "c", ["c0", "c1", "c2"])
    # a's keys are split over two buckets (a bucket holds ids of every file); all of b goes; c is untouched, and a
    # key of a file that is not there any more is ignored
    files = [
        _bucket_file(work, 0, [("part-a.parquet", "a1", "ok"), ("part-b.parquet", "b0", "error"),
                               ("part-gone.parquet", "z", "ok")]),
        _bucket_file(work, 1, [("part-a.parquet", "a4", "ok"), ("part-a.parquet", "a5", "error"),  # a5 is ok: kept
                               ("part-b.parquet", "b1", "error")]),
    ]
    result = compact_records(str(out), records_per_file=100, superseded=remove_superseded(files, None))
    assert (result.rewritten, result.superseded) == (2, 4)
    assert _ids(out) == ["a0", "a2", "a3", "a5", "c0", "c1", "c2"]
    # the emptied file is gone; the rest merged into one file (records_per_file 100)
    assert [f.rows for f in list_record_files(str(out)).live] == [7]


@pytest.mark.slow  # whole disk-shuffle passes on Ray (7 to 25 s): the slow tier
def test_many_record_files_are_rewritten_through_the_disk_shuffle(ray_local, tmp_path, monkeypatch):
    """A partition per record file makes more partitions than SMALL_PLAN_BUCKETS: the disk-based hash shuffle."""
    monkeypatch.setattr(supersede, "_FILES_PER_PARTITION", 1)
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    names = [f"f{k:02d}" for k in range(12)]
    for name in names:
        _records(out, name, [f"{name}-{i}" for i in range(4)])
    # every file loses its first two records; their keys are spread over three buckets
    keys = [(f"part-{name}.parquet", f"{name}-{i}", "ok") for name in names for i in (0, 1)]
    files = [_bucket_file(work, bucket, keys[bucket::3]) for bucket in range(3)]
    result = compact_records(str(out), records_per_file=1000, superseded=remove_superseded(files, None))
    assert (result.rewritten, result.superseded) == (12, 24)
    assert _ids(out) == sorted(f"{name}-{i}" for name in names for i in (2, 3))


def test_no_superseded_files_changes_nothing(ray_local, tmp_path):
    _records(tmp_path, "a", ["a0", "a1"])
    result = compact_records(str(tmp_path), records_per_file=2, superseded=remove_superseded([], None))
    assert (result.rewritten, result.superseded) == (0, 0) and _ids(tmp_path) == ["a0", "a1"]


def test_a_retried_rewrite_changes_nothing_more(tmp_path):
    """Ray retries a task whose worker died: the rewrite may run twice on the same file."""
    _records(tmp_path, "a", ["a0", "a1", "a2"])
    _records(tmp_path, "b", ["b0"])
    files = {f.name: (f.uri, f.size) for f in list_record_files(str(tmp_path)).live}
    keys = pa.Table.from_pylist([{"file": "part-a.parquet", "id": "a1", "status": "ok"}], schema=SUPERSEDED_SCHEMA)
    assert rewrite_record_file(keys, files=files, options=None).to_pylist() == [{"file": "part-a.parquet",
                                                                                  "rows_left": 2}]
    # nothing left to drop: the file's own count, not the listing's (3)
    assert rewrite_record_file(keys, files=files, options=None).to_pylist()[0]["rows_left"] == 2
    every_b = pa.Table.from_pylist([{"file": "part-b.parquet", "id": "b0", "status": "ok"}], schema=SUPERSEDED_SCHEMA)
    assert rewrite_record_file(every_b, files=files, options=None).to_pylist()[0]["rows_left"] == 0
    # the file is deleted now; done again, it still has nothing left
    assert rewrite_record_file(every_b, files=files, options=None).to_pylist()[0]["rows_left"] == 0
    assert _ids(tmp_path) == ["a0", "a2"]
