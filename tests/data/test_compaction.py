"""compaction: few large record files, superseded records removed, and no record read twice after a crash."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from diffedit_batch.data import compaction
from diffedit_batch.data.compaction import SUPERSEDED_SCHEMA, compact_records
from diffedit_batch.data.records import extend_result_schema, list_record_files, write_record_part
from diffedit_batch.data.results import iter_result_records
from diffedit_batch.data.storage import StorageError


def _record(record_id: str | None, status: str = "ok", run_id: str = "run-1", **extra) -> dict:
    return {"id": record_id, "row_id": record_id, "status": status, "run_id": run_id, **extra}


def _parts(prefix, sizes: list[int], start: int = 0, run: str = "r1") -> list[str]:
    """Record parts of the given sizes, ids e0000, e0001, ... in order."""
    ids = []
    for k, size in enumerate(sizes):
        records = [_record(f"e{start + len(ids) + i:04d}", run_id=run) for i in range(size)]
        ids += [r["id"] for r in records]
        write_record_part(str(prefix), records, part_name=f"{run}-{k:03d}")
    return ids


def _all(prefix) -> list[dict]:
    """What any Parquet reader sees: every row of every *.parquet under manifest/."""
    return ds.dataset(str(prefix / "manifest"), format="parquet").to_table().to_pylist()


def test_small_files_merge_into_files_of_at_least_the_target_and_one_may_stay_small(tmp_path):
    ids = _parts(tmp_path, [3, 4, 2, 5, 1, 1])
    result = compact_records(str(tmp_path), records_per_file=5, run_id="run-9")
    live = list_record_files(str(tmp_path)).live
    # the file of 5 is full already; the others, whole and in name order: 3+4, then 2+1+1 (the one file allowed
    # to stay small)
    assert sorted(f.rows for f in live) == [4, 5, 7] and sum(f.rows for f in live) == len(ids) == 16
    assert (result.files_before, result.files_after, result.merged, result.written) == (6, 3, 5, 2)
    assert sorted(f.name for f in live) == ["part-r1-003.parquet", "records-run-9-00000.parquet",
                                            "records-run-9-00001.parquet"]
    assert sorted(r["id"] for r in _all(tmp_path)) == ids  # every record once, nothing dead left
    assert not list_record_files(str(tmp_path)).dead


def test_large_files_are_left_alone_and_a_lone_small_file_is_not_rewritten(tmp_path):
    _parts(tmp_path, [6, 7, 2])
    before = {f.name: f for f in list_record_files(str(tmp_path)).live}
    result = compact_records(str(tmp_path), records_per_file=5)
    after = {f.name: f for f in list_record_files(str(tmp_path)).live}
    assert after.keys() == before.keys() and result.written == result.merged == 0


def test_merging_keeps_extra_columns_of_extended_files(tmp_path):
    write_record_part(str(tmp_path), [_record("a")], part_name="old")
    schema = extend_result_schema(pa.field("aesthetic_note", pa.string()))
    write_record_part(str(tmp_path), [_record("b", aesthetic_note="a cat")], part_name="new", schema=schema)
    compact_records(str(tmp_path), records_per_file=10)
    [merged] = list_record_files(str(tmp_path)).live
    rows = {r["id"]: r for r in _all(tmp_path)}
    assert merged.rows == 2 and rows["b"]["aesthetic_note"] == "a cat" and rows["a"]["aesthetic_note"] is None


def test_superseded_records_are_removed_in_place_and_emptied_files_deleted(tmp_path):
    write_record_part(str(tmp_path), [_record(f"k{i}") for i in range(6)] + [_record("x", "error"),
                      _record("d", "duplicate"), _record(None, "error")], part_name="big")
    write_record_part(str(tmp_path), [_record("y", "error")], part_name="only-y")
    superseded = pa.Table.from_pylist([
        {"file": "part-big.parquet", "id": "x", "status": "error"},
        {"file": "part-big.parquet", "id": "k1", "status": "error"},  # k1 is ok there: not this record
        {"file": "part-big.parquet", "id": "d", "status": "duplicate"},
        {"file": "part-big.parquet", "id": None, "status": "error"},  # records without an id
        {"file": "part-only-y.parquet", "id": "y", "status": "error"},
    ], schema=SUPERSEDED_SCHEMA)
    result = compact_records(str(tmp_path), records_per_file=5, superseded=superseded)
    assert (result.rewritten, result.superseded) == (2, 4)
    assert sorted(r["id"] for r in _all(tmp_path)) == [f"k{i}" for i in range(6)]
    assert [f.name for f in list_record_files(str(tmp_path)).live] == ["part-big.parquet"]


def test_a_compaction_that_dies_before_deleting_its_sources_reads_once_and_is_finished_next_time(
        tmp_path, monkeypatch):
    ids = _parts(tmp_path, [2, 2, 2])
    real_delete = compaction.delete

    def dying_delete(uri, options=None):
        raise StorageError("the process died here")

    monkeypatch.setattr(compaction, "delete", dying_delete)
    with pytest.raises(StorageError):
        compact_records(str(tmp_path), records_per_file=4, run_id="crashed")
    found = list_record_files(str(tmp_path))
    assert [f.name for f in found.dead] == ["part-r1-000.parquet", "part-r1-001.parquet"]
    assert Counter(r["id"] for r in _all(tmp_path))["e0000"] == 2  # a plain reader sees the dead copy...
    ours = [r["id"] for batch in iter_result_records(str(tmp_path)) for r in batch]
    assert sorted(ours) == ids  # ...ours never does

    monkeypatch.setattr(compaction, "delete", real_delete)
    result = compact_records(str(tmp_path), records_per_file=4)
    assert result.dead_deleted == 2
    assert sorted(r["id"] for r in _all(tmp_path)) == ids


def test_a_merged_file_merged_again_passes_on_what_it_replaced(tmp_path, monkeypatch):
    ids = _parts(tmp_path, [1, 1])
    compact_records(str(tmp_path), records_per_file=10, run_id="first")
    ids += _parts(tmp_path, [1], start=2, run="r2")
    # The second compaction writes its output, then dies: the first output and the new part are dead...
    monkeypatch.setattr(compaction, "delete", lambda uri, options=None: None)
    compact_records(str(tmp_path), records_per_file=10, run_id="second")
    [live] = list_record_files(str(tmp_path)).live
    assert set(live.replaces) == {"records-first-00000.parquet", "part-r2-000.parquet", "part-r1-000.parquet",
                                  "part-r1-001.parquet"}
    # ...and the first output's own sources stay dead even though it is about to go.
    assert sorted(r["id"] for batch in iter_result_records(str(tmp_path)) for r in batch) == ids


def test_records_per_file_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="records_per_file"):
        compact_records(str(tmp_path), records_per_file=0)


def test_merging_streams_batches_of_files_from_before_and_after_a_column_was_added(tmp_path, monkeypatch):
    """A merged file is written a few records at a time (memory is the output's bytes, not its records); records
    from before the fingerprint columns read as nulls beside records that have them."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(compaction, "STREAM_ROWS", 3)
    prefix = str(tmp_path)
    old = write_record_part(prefix, [{"id": f"old-{k}", "status": "ok", "run_id": "r0"} for k in range(7)],
                            part_name="a-old")
    table = pq.read_table(old)
    pq.write_table(table.drop_columns(["request_fingerprint", "settings_fingerprint"]), old)
    write_record_part(prefix, [{"id": f"new-{k}", "status": "ok", "run_id": "r1", "settings_fingerprint": "s1"}
                               for k in range(5)], part_name="b-new")
    batches = []
    real = compaction._batches
    monkeypatch.setattr(compaction, "_batches", lambda *a, **k: (batches.append(t.num_rows) or t for t in real(*a, **k)))
    result = compact_records(prefix, records_per_file=10)
    assert (result.merged, result.written) == (2, 1) and max(batches) == 3
    [merged] = list_record_files(prefix).live
    records = {r["id"]: r for r in pq.read_table(merged.uri).to_pylist()}
    assert len(records) == 12 and records["old-0"]["settings_fingerprint"] is None
    assert records["new-4"]["settings_fingerprint"] == "s1" and sorted(merged.replaces) == ["part-a-old.parquet",
                                                                                            "part-b-new.parquet"]
    # a file rewritten without its superseded records streams too
    superseded = pa.table({"file": [merged.name], "id": ["old-1"], "status": ["ok"]}, schema=SUPERSEDED_SCHEMA)
    again = compact_records(prefix, records_per_file=10, superseded=superseded)
    assert again.superseded == 1 and len(pq.read_table(merged.uri)) == 11


def _picture(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    return str(path)


def test_a_superseded_record_takes_its_loose_files_with_it_unless_told_to_keep_them(tmp_path):
    prefix = str(tmp_path)
    old = _picture(tmp_path / "images" / "a.png"), _picture(tmp_path / "masks" / "a.png")
    kept = _picture(tmp_path / "images" / "b.png")
    write_record_part(prefix, [_record("a", image_uri=old[0], mask_uri=old[1]), _record("b", image_uri=kept),
                               _record("c", image_uri=kept)], part_name="old")
    superseded = pa.table({"file": ["part-old.parquet"] * 2, "id": ["a", "c"], "status": ["ok", "ok"],
                           "keep_files": [False, True]})
    compact_records(prefix, superseded=superseded)
    assert [r["id"] for r in _all(tmp_path)] == ["b"]
    assert not any(map(lambda p: (tmp_path / p).exists(), ("images/a.png", "masks/a.png")))
    assert (tmp_path / "images" / "b.png").exists()  # named by the record that stays (and c's was to be kept)


def test_extra_records_of_an_edit_go_the_newest_done_one_stays(tmp_path):
    from diffedit_batch.data.extra_records import remove_extra_records, remove_unnamed_outputs

    prefix = str(tmp_path)
    older, newer = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
    first = _picture(tmp_path / "images" / "a.png")
    second = _picture(tmp_path / "images" / "a.run-2.png")
    write_record_part(prefix, [_record("a", image_uri=first, finished_at=older), _record("b"),
                               _record("d", status="duplicate"), _record("e", status="ok", finished_at=older)],
                      part_name="run-1")
    write_record_part(prefix, [_record("a", image_uri=second, run_id="run-2", finished_at=newer),
                               _record("d", status="duplicate"), _record("e", status="error", finished_at=newer)],
                      part_name="run-2")
    # both in one file too (a compaction merged them): the older one goes all the same
    write_record_part(prefix, [_record("f", finished_at=older, run_id="run-1"),
                               _record("f", finished_at=newer, run_id="run-2")], part_name="both")
    removed = remove_extra_records(prefix)
    assert (removed.removed, removed.outputs_deleted) == (3, 1)
    records = Counter((r["id"], r["status"], r["run_id"]) for r in _all(tmp_path))
    # a: the newest; duplicates are all kept; e: a done record beats a newer error; f: the newest
    assert records == {("a", "ok", "run-2"): 1, ("b", "ok", "run-1"): 1, ("d", "duplicate", "run-1"): 2,
                       ("e", "ok", "run-1"): 1, ("f", "ok", "run-2"): 1}
    assert not (tmp_path / "images" / "a.png").exists() and (tmp_path / "images" / "a.run-2.png").exists()
    assert remove_extra_records(prefix).removed == 0
    _picture(tmp_path / "images" / "left-by-a-stopped-run.png")
    assert remove_unnamed_outputs(prefix) == 1 and (tmp_path / "images" / "a.run-2.png").exists()
