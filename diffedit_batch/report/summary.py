"""The report's summary, accumulated one record at a time: counts, error classes, throughput, models."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from diffedit_batch.data.status import ErrorClass, Status

# Without a run file, a run's wall time is its records' finished_at span, which misses the time to the first
# written block: only worth showing over enough records.
MIN_RECORDS_FOR_SPAN = 100
MAX_ERROR_CLASSES = 50  # distinct classes kept; the rest are counted under "other" (a capped counter)
MAX_SETTINGS = 50  # distinct settings fingerprints counted (a capped counter)
MAX_CLASSES = 1000  # distinct classes shown in "edits per class"; the rest are counted under "other"


@dataclass
class RunSpan:
    """One run's records: how many, and when the first and last were written."""

    ok: int = 0
    failed: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    settings: Counter = field(default_factory=Counter)  # its records' settings fingerprints

    def add(self, ok: bool, finished_at: dt.datetime | None, settings: str = "unknown") -> None:
        if settings in self.settings or len(self.settings) < MAX_SETTINGS:
            self.settings[settings] += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if finished_at is not None:
            self.first = finished_at if self.first is None else min(self.first, finished_at)
            self.last = finished_at if self.last is None else max(self.last, finished_at)


@dataclass
class Summary:
    """What the report's header says. ``add`` takes result records (dicts of the result schema)."""

    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    filtered: int = 0  # candidates not kept (report.candidates counts why)
    error_classes: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    runs: dict[str, RunSpan] = field(default_factory=dict)
    settings: Counter = field(default_factory=Counter)  # records by settings fingerprint ("unknown": none)
    # records by the class of their row (augment.balance_by or the label column): class -> status -> records
    classes: dict[str, Counter] = field(default_factory=dict)
    edit_seconds: float = 0.0  # summed per-edit engine time of ok records (a batch's time split over its rows)
    timed_edits: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.duplicates + self.filtered

    def add(self, record: dict) -> None:
        status = record.get("status")
        if status == Status.OK:
            self.ok += 1
            if record.get("edit_s") is not None:
                self.edit_seconds += record["edit_s"]
                self.timed_edits += 1
        elif status == Status.FILTERED:
            self.filtered += 1
        else:
            if status == Status.DUPLICATE:
                self.duplicates += 1
            else:
                self.failed += 1
            name = record.get("error_class") or (ErrorClass.DUPLICATE_ID if status == Status.DUPLICATE else "unknown")
            if name not in self.error_classes and len(self.error_classes) >= MAX_ERROR_CLASSES:
                name = "other"
            self.error_classes[name] += 1
        if record.get("model_id"):
            self.models[record["model_id"]] += 1
        settings = record.get("settings_fingerprint") or "unknown"
        if settings in self.settings or len(self.settings) < MAX_SETTINGS:
            self.settings[settings] += 1
        if record.get("class_name") is not None:
            name = record["class_name"]
            if name not in self.classes and len(self.classes) >= MAX_CLASSES:
                name = "other"
            self.classes.setdefault(name, Counter())[status] += 1
        run_id = record.get("run_id") or "unknown"
        self.runs.setdefault(run_id, RunSpan()).add(status == Status.OK, record.get("finished_at"), settings)


def run_throughput(run_id: str, span: RunSpan, metadata: dict | None) -> dict:
    """A run's row of the throughput table: edits/s over its wall time.

    The wall time is the run's own (``seconds`` in its run file) when it finished; otherwise from its start
    (run file) to its last record; otherwise, over ``MIN_RECORDS_FOR_SPAN`` records or more, from its first
    record to its last (which misses the time before the first block was written); else unknown.
    """
    metadata = metadata or {}
    seconds = metadata.get("seconds")
    source = "run file"
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        started = _parse_time(metadata.get("started_at"))
        source = "run start to last record"
        if started is None and span.ok + span.failed >= MIN_RECORDS_FOR_SPAN:
            started, source = span.first, "first to last record"
        seconds = (span.last - started).total_seconds() if started and span.last else None
        if seconds is None:
            source = "unknown (no run file, too few records)"
    return {
        "run_id": run_id,
        "ok": span.ok,
        "failed": span.failed,
        "started_at": metadata.get("started_at") or (span.first.isoformat() if span.first else None),
        "seconds": seconds,
        "edits_per_s": span.ok / seconds if seconds else None,
        "source": source,
    }


def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
