"""The run's progress while it streams: one redrawn bar on a terminal, a log line every so often in a log.

Both show edits done of the plan's total, the rate, the time left and the failures; before the plan is made the
total is unknown and only the counts show.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from .summary import JobSummary

log = logging.getLogger("diffedit_batch.job")

BAR_WIDTH = 24
TERMINAL_REDRAW_S = 1.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_text(summary: JobSummary, elapsed: float, bar: bool) -> str:
    """`edits 120/1000 [###-----] 12% 3.2/s, 4m35s left, 2 failed` (the bar only when `bar`)."""
    done = summary.tallied
    total = summary.pending
    rate = done / elapsed if elapsed > 0 else 0.0
    failures = summary.failed + summary.duplicates
    if not total:
        return f"edits {done} done, {rate:.2f}/s, {failures} failed"
    fraction = min(1.0, done / total)
    drawn = ("[" + "#" * round(fraction * BAR_WIDTH) + "-" * (BAR_WIDTH - round(fraction * BAR_WIDTH)) + "] "
             if bar else "")
    left = f"{_duration((total - done) / rate)} left" if rate > 0 and done < total else "-- left"
    return f"edits {done}/{total} {drawn}{fraction:.0%} {rate:.2f}/s, {left}, {failures} failed"


class ProgressReporter:
    """Shows the summary's counts from a daemon thread; `with ProgressReporter(...)` starts and stops it.

    On a terminal (`stream.isatty()`), a bar redrawn in place each second, cleared at the end; otherwise a log line
    every `interval_s` seconds.
    """

    def __init__(self, summary: JobSummary, interval_s: float, stream=None):
        self.summary = summary
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = TERMINAL_REDRAW_S if self.terminal else interval_s
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * TERMINAL_REDRAW_S)
        if self.terminal:
            self.stream.write("\r\033[K")  # the summary line replaces the bar
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            elapsed = time.perf_counter() - self.started
            if self.terminal:
                self.stream.write("\r\033[K" + progress_text(self.summary, elapsed, bar=True))
                self.stream.flush()
            else:
                log.info("progress: %s after %.0f s", progress_text(self.summary, elapsed, bar=False), elapsed)
