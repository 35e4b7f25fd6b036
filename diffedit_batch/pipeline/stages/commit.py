"""Commit: the result records of written rows, a part file per batch, then one summary row per edit (CPU tasks).

It runs after the write stage, so a record never names a missing output. Batches are `job.record_batch_size`
rows: a driver killed mid-run re-does at most that many edits per commit task (their outputs exist, their records
do not). The run's compaction merges the parts into files of `job.records_per_file` records at its end.
"""

from __future__ import annotations

import hashlib
import logging

import pyarrow as pa

from diffedit_batch.config import Config
from diffedit_batch.data.records import RECORD_SCHEMA, record_from_row, write_record_part
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions

from ..rows import SUMMARY_SCHEMA, require, to_table
from .spec import Stage

log = logging.getLogger(__name__)

# What every record needs from its work row; the rest of the record's columns are copied as the row has them
# (null where no stage set them: e.g. the CLIP scores without a CLIP stage). See data.records.record_from_row.
READS = ("edit_id", "row_id", "status", "error", "error_class", "image_uri", "mask_uri")


def commit_records(batch: pa.Table, *, output_prefix: str, options: StorageOptions, model_id: str,
                   run_id: str) -> pa.Table:
    """Write the batch's result records as one part; return one summary row per edit. A part that cannot be
    written fails its rows as storage errors (not recorded: a re-run edits them again) instead of the job."""
    require(batch, READS, "commit")
    rows = batch.to_pylist()
    records = [record_from_row(row, model_id, run_id) for row in rows]
    summary = [{"edit_id": row["edit_id"], "status": record["status"], "error_class": record["error_class"],
                "edit_s": row.get("edit_s"), "actor_wait_s": row.get("actor_wait_s"), "recorded": True}
               for row, record in zip(rows, records)]
    if records:
        try:
            write_record_part(output_prefix, records, options, part_name=part_name(run_id, records),
                              schema=RECORD_SCHEMA)
        except StorageError as error:
            log.warning("cannot write the records of %d edits: %s", len(records), error)
            for row in summary:
                row.update(status=Status.ERROR, error_class=ErrorClass.STORAGE, recorded=False)
    return to_table(summary, SUMMARY_SCHEMA)


def part_name(run_id: str, records: list[dict]) -> str:
    """Deterministic per batch: a retried commit task replaces its own part instead of adding a second."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(repr((record["id"], record["row_id"], record["status"])).encode("utf-8", "surrogatepass"))
    return f"{run_id}-{digest.hexdigest()}"


def commit_stage(config: Config, output_prefix: str, run_id: str) -> Stage:
    return Stage(
        name="commit", run=commit_records, reads=READS, adds=(), cpus=config.job.write_cpus,
        batch_size=config.job.record_batch_size,
        kwargs={"output_prefix": output_prefix, "options": config.storage, "model_id": config.model.pretrained,
                "run_id": run_id},
    )
