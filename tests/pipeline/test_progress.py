"""The run's progress: a bar redrawn in place on a terminal, a log line in a log, the counts it shows."""

from __future__ import annotations

import io
import logging
import time

import pyarrow as pa

from diffedit_batch.pipeline.progress import ProgressReporter, progress_text
from diffedit_batch.pipeline.rows import SUMMARY_SCHEMA
from diffedit_batch.pipeline.summary import JobSummary


def summary(pending: int = 0, tallied: int = 0, failed: int = 0) -> JobSummary:
    return JobSummary(run_id="r", pending=pending, tallied=tallied, failed=failed)


def test_the_text_shows_done_of_total_rate_time_left_and_failures():
    assert progress_text(summary(1000, 120, 2), 37.5, bar=False) == "edits 120/1000 12% 3.20/s, 4m35s left, 2 failed"
    bar = progress_text(summary(1000, 500), 10.0, bar=True)
    assert bar.startswith("edits 500/1000 [############------------] 50%")
    assert progress_text(summary(10, 0), 5.0, bar=False) == "edits 0/10 0% 0.00/s, -- left, 0 failed"
    assert progress_text(summary(0, 0), 5.0, bar=False) == "edits 0 done, 0.00/s, 0 failed"  # before the plan
    assert "1h23m left" in progress_text(summary(5000, 1), 1.0, bar=False)


def test_the_summary_counts_what_the_edit_pass_tallied():
    done = summary(pending=3)
    rows = [{"status": "ok", "edit_s": 1.0}, {"status": "error", "error_class": "storage", "edit_s": 1.0}]
    done.tally(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))
    assert done.tallied == 2 and progress_text(done, 1.0, bar=False).startswith("edits 2/3 67%")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place_and_cleared_at_the_end(monkeypatch):
    monkeypatch.setattr("diffedit_batch.pipeline.progress.TERMINAL_REDRAW_S", 0.02)
    stream = FakeTerminal()
    with ProgressReporter(summary(10, 4), interval_s=30.0, stream=stream):
        time.sleep(0.2)
    text = stream.getvalue()
    assert text.count("\r\033[K") >= 3 and "\n" not in text  # redrawn, never a new line
    assert "edits 4/10 [" in text and text.endswith("\r\033[K")  # the summary line replaces the bar


def test_a_log_gets_a_progress_line_every_interval(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="diffedit_batch.job"):
        with ProgressReporter(summary(10, 4), interval_s=0.05, stream=stream):
            time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: ")]
    assert len(lines) >= 2 and "edits 4/10 40%" in lines[0] and "[" not in lines[0]
    assert stream.getvalue() == ""  # nothing drawn on a stream that is not a terminal
