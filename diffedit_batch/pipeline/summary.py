"""What a run did, counted from the write stage's summary rows as they stream back to the driver."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from diffedit_batch.data.status import ErrorClass, Status


@dataclass
class JobSummary:
    run_id: str
    status: str = "running"  # then done | failed (the run's own files could not be read or written) | interrupted
    error: str | None = None  # why the run failed
    pending: int = 0  # edits the plan left to do (the progress bar's total)
    tallied: int = 0  # edits of the edit pass that ended (ok or not) so far
    ok: int = 0
    filtered: int = 0  # candidates not kept (candidates.count > 1): below a floor or ranked below keep
    candidates: int = 1  # edits tried per request
    failed: int = 0
    duplicates: int = 0
    skipped: int = 0  # done earlier, for the same request (under the same settings, or kept)
    changed: int = 0  # done earlier for another request (a revised prompt, picture, seed): edited again
    sources_changed: int = 0  # of `changed`: their picture changed under its URI (job.verify_sources)
    unverified: int = 0  # done earlier by records without the picture's identity: not checked, kept as done
    settings_redone: int = 0  # done earlier under other settings, edited again (--on-settings-change redo)
    settings_kept: int = 0  # done earlier under other settings, kept (--on-settings-change keep)
    unknown_settings: int = 0  # done earlier by records without fingerprints (kept, or redone with redo)
    unrecorded: int = 0  # edits of the edit pass whose record could not be written (counted in failed too)
    unrecorded_error: str | None = None  # why the first of them could not be
    planned_invalid: int = 0  # invalid rows the plan recorded
    reselected: int = 0  # done requests whose candidates were selected again from their recorded scores
    seconds: float = 0.0
    error_classes: Counter = field(default_factory=Counter)
    actor_busy_s: float = 0.0  # summed over edit actors: editing
    actor_wait_s: float = 0.0  # summed over edit actors: waiting for the next batch after the first
    planned_s: float = 0.0  # time to the end of the plan: before the first edit
    record_files: int | None = None  # record files in the result manifest after the run's compaction
    # the engines' work, summed over the edit actors (unet_shapes: the distinct UNet input shapes)
    engine: dict = field(default_factory=lambda: {"unet_calls": 0, "unet_samples": 0, "unet_shapes": [],
                                                   "vae_encodes": 0, "vae_decodes": 0, "text_encodes": 0, "edits": 0})
    fetch_cpu_s: float = 0.0  # CPU seconds in the fetch stage (read, decode, resize)
    write_cpu_s: float = 0.0  # CPU seconds in the write stage (metrics, encodes, writes)

    @property
    def unet_samples_per_call(self) -> float | None:
        calls = self.engine["unet_calls"]
        return self.engine["unet_samples"] / calls if calls else None

    @property
    def actor_busy_fraction(self) -> float | None:
        total = self.actor_busy_s + self.actor_wait_s
        return self.actor_busy_s / total if total > 0 else None

    @property
    def attempted(self) -> int:
        return self.ok + self.filtered + self.failed + self.duplicates

    @property
    def failed_fraction(self) -> float:
        return (self.failed + self.duplicates) / self.attempted if self.attempted else 0.0

    @property
    def edits_per_second(self) -> float:
        """Edits made per second: every candidate generated counts, kept or not."""
        return (self.ok + self.filtered) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        classes = ", ".join(f"{name}: {count}" for name, count in self.error_classes.most_common(8))
        busy = self.actor_busy_fraction
        kept = (f"candidates kept {self.ok} / generated {self.ok + self.filtered} ({self.filtered} filtered), "
                if self.candidates > 1 else "")
        return (
            kept + f"edits ok {self.ok}, failed {self.failed}, duplicates {self.duplicates}, skipped {self.skipped} "
            f"(done earlier), changed {self.changed} (request changed, edited again)"
            + (f" of which {self.sources_changed} a changed picture" if self.sources_changed else "")
            + (f", re-selected {self.reselected} (candidates chosen again from their scores, not edited again)"
               if self.reselected else "")
            + (f", under other settings {self.settings_redone} redone and {self.settings_kept} kept"
               if self.settings_redone or self.settings_kept else "")
            + (f", {self.unknown_settings} recorded before fingerprints" if self.unknown_settings else "")
            + f"; {self.edits_per_second:.3f} edits/s over {self.seconds:.1f} s"
            + (f"; edit actors busy {busy:.0%} of the time after start-up" if busy is not None else "")
            + (f"; {self.unet_samples_per_call:.1f} UNet samples per call"
               if self.unet_samples_per_call is not None else "")
            + (f"; errors by class: {classes}" if classes else "")
        )

    def add_plan(self, plan, on_settings_change: str | None = None, candidates: int = 1) -> None:
        """Count what the plan decided: edits done earlier, changed, made under other settings, invalid rows and
        duplicates (recorded by the plan). `candidates`: edits tried per pending request."""
        self.candidates = candidates
        self.pending += plan.pending * candidates
        self.skipped += plan.skipped
        self.changed += plan.changed
        self.sources_changed += plan.sources_changed
        self.unverified += plan.unverified
        self.reselected += plan.reselected
        if on_settings_change == "keep":
            self.settings_kept += plan.settings_changed
        else:
            self.settings_redone += plan.settings_changed
        self.unknown_settings += plan.unknown_settings
        self.failed += plan.invalid
        self.planned_invalid += plan.invalid
        self.duplicates += plan.duplicates
        if plan.invalid:
            self.error_classes[ErrorClass.INVALID_ROW] += plan.invalid
        if plan.duplicates:
            self.error_classes[ErrorClass.DUPLICATE_ID] += plan.duplicates

    def tally(self, batch: pa.Table) -> None:
        """Count one block of the commit stage's summary rows."""
        self.tallied += batch.num_rows
        self.actor_busy_s += pc.sum(batch["edit_s"]).as_py() or 0.0
        self.actor_wait_s += pc.sum(batch["actor_wait_s"]).as_py() or 0.0
        self.fetch_cpu_s += pc.sum(batch["fetch_cpu_s"]).as_py() or 0.0
        self.write_cpu_s += pc.sum(batch["write_cpu_s"]).as_py() or 0.0
        if "recorded" in batch.column_names:
            unrecorded = batch.num_rows - (pc.sum(batch["recorded"].fill_null(True)).as_py() or 0)
            self.unrecorded += unrecorded
            if unrecorded and self.unrecorded_error is None and "record_error" in batch.column_names:
                self.unrecorded_error = next(iter(batch["record_error"].drop_null().to_pylist()), None)
        for counts in batch["engine_counts"].drop_null().to_pylist():
            self._add_engine(json.loads(counts))
        for status, error_class in zip(batch["status"].to_pylist(), batch["error_class"].to_pylist()):
            if status == Status.OK:
                self.ok += 1
            elif status == Status.FILTERED:
                self.filtered += 1
            elif status == Status.DUPLICATE:
                self.duplicates += 1
                self.error_classes[ErrorClass.DUPLICATE_ID] += 1
            else:
                self.failed += 1
                self.error_classes[error_class or "unknown"] += 1

    def count_recorded(self, records: Counter) -> None:
        """Count the edit pass by the records the run wrote (`records`: (status, error class) -> records of its edit
        pass), where the stream of summary rows stopped before they all reached the driver (a signal): the summary
        and the run file then say what was recorded, not only what the driver had been told."""
        counted = Counter({status: sum(n for (s, _), n in records.items() if s == status)
                           for status in (Status.OK, Status.FILTERED, Status.ERROR)})
        if sum(counted.values()) <= self.tallied:
            return  # the stream had counted them all
        errors = Counter()
        for (status, error_class), n in records.items():
            if status == Status.ERROR:
                errors[error_class or "unknown"] += n
        invalid = self.planned_invalid  # recorded by the plan, before the edit pass
        self.error_classes = Counter({ErrorClass.DUPLICATE_ID: self.error_classes[ErrorClass.DUPLICATE_ID]})
        self.error_classes[ErrorClass.INVALID_ROW] += invalid
        self.error_classes.update(errors)
        self.error_classes = +self.error_classes
        self.ok, self.filtered = counted[Status.OK], counted[Status.FILTERED]
        self.failed = invalid + counted[Status.ERROR]
        self.tallied = sum(counted.values())

    def _add_engine(self, counts: dict) -> None:
        for name, value in counts.items():
            if name == "unet_shapes":
                shapes = {tuple(shape) for shape in self.engine[name]} | {tuple(shape) for shape in value}
                self.engine[name] = sorted(list(shape) for shape in shapes)
            else:
                self.engine[name] = self.engine.get(name, 0) + value
