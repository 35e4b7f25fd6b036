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
