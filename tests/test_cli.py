"""The command line's storage commands, without Ray: compact (and its errors)."""

from __future__ import annotations

from collections import Counter

import pyarrow.dataset as ds

from diffedit_batch.cli import main
from diffedit_batch.data.records import list_record_files, write_record_part


def test_compact_merges_an_older_runs_many_small_parts(tmp_path, capsys):
    prefix = tmp_path / "job"
    for k in range(25):  # what a run before compaction existed left: a part per write batch of 8 edits
        write_record_part(str(prefix), [{"id": f"e{k}-{i}", "status": "ok", "run_id": "old"} for i in range(8)],
                          part_name=f"old-{k:03d}")
    assert main(["compact", str(prefix), "--records-per-file", "50"]) == 0
    assert "record files 25 -> 4" in capsys.readouterr().out
    assert sorted(f.rows for f in list_record_files(str(prefix)).live) == [32, 56, 56, 56]  # 7 parts, and the rest
    records = ds.dataset(str(prefix / "manifest"), format="parquet").to_table().to_pylist()
    assert Counter(r["id"] for r in records) == {f"e{k}-{i}": 1 for k in range(25) for i in range(8)}


def test_compact_refuses_a_bad_setting_in_one_line(tmp_path, capsys):
    assert main(["compact", str(tmp_path), "--records-per-file", "0"]) == 2
    assert capsys.readouterr().err.startswith("compact error: records_per_file must be a positive integer")


def test_the_global_options_go_before_or_after_the_command():
    from diffedit_batch.cli import build_parser

    parser = build_parser()
    for argv, verbose, level in (
        (["compact", "p"], None, None),
        (["--verbose", "compact", "p"], True, None),
        (["compact", "p", "--verbose"], True, None),
        (["--log-level", "DEBUG", "compact", "p"], None, "DEBUG"),
        (["--log-level", "DEBUG", "run", "--config", "c", "--input", "i", "--output", "o", "--verbose"], True,
         "DEBUG"),
    ):
        args = parser.parse_args(argv)
        assert (getattr(args, "verbose", None), getattr(args, "log_level", None)) == (verbose, level), argv
