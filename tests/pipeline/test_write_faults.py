"""Storage that fails: the write and commit stages retry with backoff, and what keeps failing becomes data.

`write_outputs` and `commit_records` are called directly (no Ray) with the local filesystem's writer made to fail.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data import storage
from diffedit_batch.data.records import list_record_files
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.data.status import Status
from diffedit_batch.pipeline.rows import to_table
from diffedit_batch.pipeline.stages.commit import commit_records
from diffedit_batch.pipeline.stages.write import write_outputs

OPTIONS = StorageOptions(write_retries=3, retry_backoff_s=0.01)


def edited_rows(count: int) -> list[dict]:
    """Rows as the edit stage hands them to the write stage: a 16x16 edit and its 2x2 mask."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(count):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        rows.append({
            "edit_id": f"e{k}", "row_id": f"e{k}", "source_image_uri": f"/in/e{k}.png", "status": Status.PENDING,
            "seed": k, "source_prompt": "a", "target_prompt": "b", "width": 32, "height": 32, "model_width": 16,
            "model_height": 16, "pixels": pixels.tobytes(), "edited": (255 - pixels).tobytes(),
            "mask": np.array([[0, 1], [1, 1]], np.uint8).tobytes(), "mask_width": 2, "mask_height": 2,
            "mask_coverage": 0.75, "edit_s": 0.1,
        })
    return rows


def run_write(rows: list[dict], prefix) -> list[dict]:
    """The write stage, then the commit stage, on one batch: their summary rows."""
    written = write_outputs(to_table(rows), output_prefix=str(prefix), options=OPTIONS)
    assert written.column("pixels").null_count == written.num_rows  # payloads stop travelling after the write
    out = commit_records(written, output_prefix=str(prefix), options=OPTIONS, model_id="tiny", run_id="run1")
    return out.to_pylist()


@pytest.fixture
def sleeps(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr(storage, "_backoff_sleep", recorded.append)
    return recorded


def failing_writer(monkeypatch, should_fail):
    """Make the local writer raise a transient OSError whenever should_fail(path, attempt) says so."""
    real = storage._write_local
    attempts: dict[str, int] = {}

    def write(path: str, data: bytes) -> None:
        attempts[path] = attempts.get(path, 0) + 1
        if should_fail(path, attempts[path]):
            raise OSError(f"injected failure {attempts[path]} writing {path}")
        real(path, data)

    monkeypatch.setattr(storage, "_write_local", write)
    return attempts


def records_of(prefix) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(str(prefix / "manifest")).to_pylist()}


def test_a_transient_write_failure_is_retried_with_backoff(monkeypatch, sleeps, tmp_path):
    attempts = failing_writer(monkeypatch, lambda path, attempt: "/images/" in path and attempt <= 2)
    summary = run_write(edited_rows(2), tmp_path)
    assert [(s["status"], s["recorded"]) for s in summary] == [("ok", True), ("ok", True)]
    assert sorted(n for path, n in attempts.items() if "/images/" in path) == [3, 3]
    assert sleeps == [0.01, 0.02, 0.01, 0.02]  # exponential backoff, per write
    for record in records_of(tmp_path).values():
        assert record["status"] == "ok"
        assert Image.open(record["image_uri"]).size == (32, 32)


def test_a_write_that_keeps_failing_becomes_that_rows_storage_error(monkeypatch, sleeps, tmp_path):
    key = storage.output_key("e1")
    attempts = failing_writer(monkeypatch, lambda path, attempt: f"/images/{key}" in path)
    summary = run_write(edited_rows(3), tmp_path)
    assert [(s["edit_id"], s["status"], s["error_class"]) for s in summary] == [
        ("e0", "ok", None), ("e1", "error", "storage"), ("e2", "ok", None)]
    assert max(attempts.values()) == OPTIONS.write_retries + 1
    records = records_of(tmp_path)
    assert records["e1"]["status"] == "error" and records["e1"]["error_class"] == "storage"
    assert "after 4 attempts" in records["e1"]["error"] and records["e1"]["image_uri"] is None
    assert records["e0"]["status"] == records["e2"]["status"] == "ok"


def test_a_record_part_that_cannot_be_written_fails_the_blocks_rows_without_crashing(monkeypatch, sleeps, tmp_path):
    failing_writer(monkeypatch, lambda path, attempt: "/manifest/" in path)
    summary = run_write(edited_rows(2), tmp_path)
    assert [(s["status"], s["error_class"], s["recorded"]) for s in summary] == [("error", "storage", False)] * 2
    assert list_record_files(str(tmp_path)).live == []  # nothing persisted: a re-run edits them again
    assert not list((tmp_path / "manifest").glob("part-*"))


def test_records_that_cannot_be_written_are_counted_with_their_reason(monkeypatch, sleeps, tmp_path):
    import errno

    import pyarrow as pa

    from diffedit_batch.pipeline.rows import SUMMARY_SCHEMA
    from diffedit_batch.pipeline.summary import JobSummary

    def full(path: str, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_write_local", full)
    rows = to_table([{**row, "status": Status.OK, "image_uri": f"/out/{row['edit_id']}.png"}
                     for row in edited_rows(2)])
    out = commit_records(rows, output_prefix=str(tmp_path), options=OPTIONS, model_id="tiny", run_id="run1")
    summary = JobSummary(run_id="run1")
    summary.tally(pa.Table.from_pylist(out.to_pylist(), schema=SUMMARY_SCHEMA))
    assert (summary.unrecorded, summary.failed) == (2, 2)
    assert "No space left on device" in summary.unrecorded_error and "/manifest/" in summary.unrecorded_error


def test_a_lease_renewal_on_a_full_disk_leaves_no_temp_file_and_is_remembered(monkeypatch, tmp_path):
    import errno
    import time

    from diffedit_batch.data import lease as lease_module
    from diffedit_batch.data.lease import acquire_lease

    prefix = tmp_path / "out"
    held = acquire_lease(str(prefix), "run1", StorageOptions(), timeout_s=4)
    try:
        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(lease_module.os, "fsync", no_space)
        with pytest.raises(OSError, match="No space left"):
            held.renew()
        deadline = time.time() + 5
        while held.unwritable is None and time.time() < deadline:  # the renewal thread, every second
            time.sleep(0.05)
        assert "No space left on device" in held.unwritable
        assert sorted(os.listdir(prefix)) == ["lease.json"]  # no lease.json.<pid>.<n>.tmp
        monkeypatch.undo()
        while held.unwritable is not None and time.time() < deadline:  # written again: forgotten
            time.sleep(0.05)
        assert held.unwritable is None and not held.lost
    finally:
        held.release()
