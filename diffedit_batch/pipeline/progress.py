"""A progress line in the log at least every `interval` seconds while the run streams."""

from __future__ import annotations

import logging
import threading
import time

from .summary import JobSummary

log = logging.getLogger("diffedit_batch.job")


class ProgressReporter:
    """Logs the summary's counts from a daemon thread; `with ProgressReporter(...)` starts and stops it."""

    def __init__(self, summary: JobSummary, interval_s: float):
        self.summary = summary
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            summary = self.summary
            elapsed = time.perf_counter() - self.started
            log.info(
                "progress: %d ok, %d failed, %d duplicates, %.3f edits/s after %.0f s",
                summary.ok, summary.failed, summary.duplicates, summary.ok / elapsed if elapsed else 0.0, elapsed,
            )
