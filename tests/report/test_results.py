"""Reading the result manifest back: superseded records are skipped, old parts read with null new columns."""

from __future__ import annotations

import pyarrow as pa

from diffedit_batch.data.records import RESULT_SCHEMA, extend_result_schema, write_record_part
from diffedit_batch.data.results import iter_result_records


def test_superseded_records_are_skipped_and_missing_columns_are_none(tmp_path):
    prefix = str(tmp_path)
    old = [{"id": "a", "row_id": "a", "status": "error", "error": "boom", "error_class": "engine", "run_id": "r1"},
           {"id": "b", "row_id": "b", "status": "ok", "run_id": "r1"}]
    write_record_part(prefix, old, part_name="r1-x")
    new_schema = extend_result_schema(pa.field("background_psnr", pa.float64()), base=RESULT_SCHEMA)
    write_record_part(prefix, [{"id": "a", "row_id": "a", "status": "ok", "run_id": "r2", "background_psnr": 30.0}],
                      part_name="r2-x", schema=new_schema)
    records = [r for batch in iter_result_records(prefix, columns=["status", "background_psnr"], batch_size=1)
               for r in batch]
    assert sorted((r["id"], r["status"], r["background_psnr"]) for r in records) == [
        ("a", "ok", 30.0), ("b", "ok", None)
    ]


def test_of_two_ok_records_of_an_edit_the_latest_is_read(tmp_path):
    """A run stopped before its compaction leaves the record of a revised request beside the earlier one."""
    import datetime as dt

    prefix = str(tmp_path)
    early, late = (dt.datetime(2026, 1, day, tzinfo=dt.timezone.utc) for day in (1, 2))
    write_record_part(prefix, [{"id": "a", "status": "ok", "target_prompt": "revised", "run_id": "r2",
                                "finished_at": late}], part_name="a-later-run")
    write_record_part(prefix, [{"id": "a", "status": "ok", "target_prompt": "old", "run_id": "r1",
                                "finished_at": early}], part_name="b-earlier-run")
    records = [r for batch in iter_result_records(prefix, columns=["target_prompt"]) for r in batch]
    assert [(r["id"], r["target_prompt"]) for r in records] == [("a", "revised")]
