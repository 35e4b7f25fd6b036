"""What a run leaves settled when it stops in its edit pass (SIGINT, SIGTERM, a failure), and the removals a run
makes before its edits: never two records of one edit, never a file that no record names.

A run that edits something again writes the new record before the earlier one is removed. When it stops early its
clean-up counts the records it wrote (the summary rows streaming to the driver may not have arrived), removes the
earlier records of the edits it recorded again (and only those: an edit it did not reach keeps its one record), and
deletes the files it wrote for edits whose records it never wrote.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections import Counter

from diffedit_batch.config import Config
from diffedit_batch.data.compaction import compact_records
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.records import list_record_files, read_record_file
from diffedit_batch.data.storage import delete, delete_folder, list_files
from diffedit_batch.redaction import redact_text

from .planning import RunPlan
from .summary import JobSummary
from .supersede import remove_superseded
from .task_errors import one_line

log = logging.getLogger("diffedit_batch.job")

__all__ = ["clean_up_stopped_run", "remove_empty_work_root", "remove_settled_records", "remove_unrecorded_outputs"]


def remove_settled_records(output_prefix: str, options, plan: RunPlan) -> None:
    """Remove the superseded records the plan settled itself (records outlived by another, errors of done edits,
    duplicates recorded again), before the edit pass, without merging files: what an earlier run that stopped left
    twice goes before this run edits anything."""
    if plan.superseded_files:
        compact_records(output_prefix, options, superseded=remove_superseded(plan.superseded_files, options,
                                                                             pending=False), merge=False)


def clean_up_stopped_run(config: Config, output_prefix: str, run_id: str, plan: RunPlan,
                         summary: JobSummary) -> None:
    """A run stopped in its edit pass: count what it recorded (its summary rows may not all have reached the
    driver), and remove the earlier records of the edits it recorded again, so that no edit is left with two
    records, then compact. The earlier records of edits it did not reach stay: they are still the only ones. Best
    effort: what fails here is said and left to the next run, whose start removes it."""
    options = config.storage
    try:
        own = _settled_own_records(output_prefix, run_id, options)
        counts: Counter = Counter()
        for file in own:
            table = read_record_file(file, options, columns=["status", "error_class"])
            counts.update(zip(table.column("status").to_pylist(), table.column("error_class").to_pylist()))
        summary.count_recorded(counts)
        if not config.output.sharded:
            remove_unrecorded_outputs(output_prefix, run_id, own, options)
        compaction = compact_records(output_prefix, options, records_per_file=config.job.records_per_file,
                                     superseded=remove_superseded(plan.superseded_files, options, pending=True,
                                                                  recorded=own), run_id=run_id)
        summary.record_files = compaction.files_after
        delete_folder(OutputLayout(output_prefix).work_folder(run_id), options)
        remove_empty_work_root(output_prefix, options)
    except Exception as error:  # noqa: BLE001 - the run is ending anyway; the next run's start finishes this
        log.warning("run %s stopped; its clean-up did not finish (the next run or `compact` finishes it): %s",
                    run_id, redact_text(one_line(f"{type(error).__name__}: {error}")))


# How long a stopped run waits for the commits its executor had in flight: a commit task that was writing when the
# executor shut down still lands its record part, and the clean-up must see it, or its edits keep two records.
SETTLE_POLL_S = 0.5
SETTLE_MAX_S = 30.0


def _settled_own_records(output_prefix: str, run_id: str, options) -> list:
    """This run's record parts once no more appear: listed until two listings SETTLE_POLL_S apart agree (at most
    SETTLE_MAX_S)."""
    def own() -> list:
        return [file for file in list_record_files(output_prefix, options).live
                if file.name.startswith(f"part-{run_id}-") and not file.name.startswith(f"part-{run_id}-plan-")]

    files = own()
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        again = own()
        if {file.name for file in again} == {file.name for file in files}:
            return again
        files = again
    return files


def remove_unrecorded_outputs(output_prefix: str, run_id: str, own: list, options) -> None:
    """Delete the files this stopped run wrote for edits done again (named with its run id) that none of its
    records names: their records were never written. (Files of first edits keep their one name; the run that
    edits them next writes over them.)"""
    layout = OutputLayout(output_prefix)
    tagged = [uri for folder in (posixpath.dirname(layout.image("x")), posixpath.dirname(layout.mask("x")))
              for uri in list_files(folder, f".{run_id}.png", options)]
    if not tagged:
        return
    named = set()
    for file in own:
        table = read_record_file(file, options, columns=["image_uri", "mask_uri"])
        named.update(posixpath.basename(uri) for column in table.columns for uri in column.drop_null().to_pylist())
    for uri in tagged:
        if posixpath.basename(uri) not in named:
            delete(uri, options)


def remove_empty_work_root(output_prefix: str, options) -> None:
    root = OutputLayout(output_prefix).work
    if not list_files(root, None, options):
        delete_folder(root, options)
