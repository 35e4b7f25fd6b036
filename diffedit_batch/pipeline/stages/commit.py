"""Commit: a batch's shard (shard output formats), then its result records, then one summary row per edit.

It runs after the write stage, so a record never names a missing output: the shard is written whole (atomically)
before the records that name its members. For the `files` format a batch is `job.record_batch_size` rows; for the
shard formats it is `output.shard_rows` rows, cut into shards of at most `output.shard_max_mb` of images. A driver
killed mid-run re-does at most one batch per commit task (its outputs exist, its records do not); a shard that
no record names is removed by the next run. The run's compaction merges the record parts into files of
`job.records_per_file` records at its end.
"""

from __future__ import annotations

import hashlib
import logging

import pyarrow as pa

from diffedit_batch.config import Config, OutputConfig
from diffedit_batch.data.inputs import carried_of
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.outputs import (
    META_FIELDS,
    SHARD_EXTENSIONS,
    Sample,
    member_uri,
    parquet_shard,
    sample_key,
    shard_name,
    webdataset_shard,
)
from diffedit_batch.data.records import RECORD_SCHEMA, record_from_row, write_record_part
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageError, StorageOptions, redact_uri, write_bytes_atomic

from ..rows import PAYLOADS, SUMMARY_SCHEMA, failed, require, to_table
from .spec import Stage

log = logging.getLogger(__name__)

# What every record needs from its work row; the rest of the record's columns are copied as the row has them
# (null where no stage set them: e.g. the CLIP scores without a CLIP stage). See data.records.record_from_row.
READS = ("edit_id", "row_id", "status", "error", "error_class", "image_uri", "mask_uri")


def commit_records(batch: pa.Table, *, output_prefix: str, options: StorageOptions, model_id: str, run_id: str,
                   output: OutputConfig = OutputConfig(), carried: pa.Schema | None = None,
                   features: dict | None = None) -> pa.Table:
    """Write the batch's shards (shard formats), then its result records as one part; return one summary row per
    edit. A shard that cannot be written fails its rows as storage errors (recorded); a record part that cannot be
    written fails its rows as storage errors (not recorded: a re-run edits them again) instead of the job."""
    require(batch, READS, "commit")
    rows = batch.to_pylist()
    if output.sharded:
        _write_shards(rows, OutputLayout(output_prefix), options, output, run_id, carried, features)
    records = [record_from_row(row, model_id, run_id) for row in rows]
    summary = [{"edit_id": row["edit_id"], "status": record["status"], "error_class": record["error_class"],
                "edit_s": row.get("edit_s"), "actor_wait_s": row.get("actor_wait_s"), "recorded": True,
                "engine_counts": row.get("engine_counts"), "fetch_cpu_s": row.get("fetch_cpu_s"),
                "write_cpu_s": row.get("write_cpu_s")}
               for row, record in zip(rows, records)]
    if records:
        try:
            write_record_part(output_prefix, records, options, part_name=part_name(run_id, records),
                              schema=RECORD_SCHEMA)
        except StorageError as error:
            log.warning("cannot write the records of %d edits: %s", len(records), error)
            for row in summary:
                row.update(status=Status.ERROR, error_class=ErrorClass.STORAGE, recorded=False,
                           record_error=str(error))
    del rows, records
    # Arrow's allocator keeps freed pages for reuse; a long-lived worker that handles a batch of shard images and
    # long prompts at a time would otherwise hold its largest batch's worth for good.
    pa.default_memory_pool().release_unused()
    return to_table(summary, SUMMARY_SCHEMA)


def _write_shards(rows: list[dict], layout: OutputLayout, options: StorageOptions, output: OutputConfig,
                  run_id: str, carried: pa.Schema | None = None, features: dict | None = None) -> None:
    """Put the encoded rows in shards of at most `shard_max_mb` of images, write each whole, and point the rows at
    their members (status ok); a shard that cannot be written makes its rows storage errors."""
    # pending: edits to record ok; filtered with an encoded edit: a candidate not kept, written on request
    pending = [(index, _sample(row)) for index, row in enumerate(rows)
               if row["status"] == Status.PENDING or (row["status"] == Status.FILTERED and row.get("encoded_edit"))]
    limit = output.shard_max_mb * 2**20
    groups: list[list[tuple[int, Sample]]] = []
    size = limit
    for item in pending:
        if size + item[1].size > limit and (not groups or groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item[1].size
    extension = SHARD_EXTENSIONS[output.format]
    def encode(samples: list[Sample]) -> bytes:
        if output.format == "webdataset":
            return webdataset_shard(samples)
        return parquet_shard(samples, carried, features)

    for group in groups:
        samples = [sample for _, sample in group]
        uri = layout.shard(shard_name(run_id, [sample.key for sample in samples]), extension)
        try:
            write_bytes_atomic(uri, encode(samples), options)
        except StorageError as error:
            for index, _ in group:
                rows[index] = failed(rows[index], ErrorClass.STORAGE, f"cannot write its shard: {error}")
            continue
        for index, sample in group:
            rows[index].update({
                "status": Status.OK if rows[index]["status"] == Status.PENDING else rows[index]["status"],
                **dict.fromkeys(PAYLOADS),
                "image_uri": member_uri(uri, f"{sample.key}.{sample.edit_ext}"),
                "mask_uri": member_uri(uri, f"{sample.key}.mask.png"),
            })


def _sample(row: dict) -> Sample:
    return Sample(
        key=sample_key(row["edit_id"]), edit=row["encoded_edit"], edit_ext=row["encoded_edit_ext"],
        mask=row["encoded_mask"],
        meta={name: row.get(name) for name in META_FIELDS}
        | {"id": row["edit_id"], "source_image_uri": redact_uri(row.get("source_image_uri")),
           "source_id": row.get("row_id"), "synthetic": True},
        source=row.get("encoded_source"), source_ext=row.get("encoded_source_ext"),
        carried=carried_of(row) or None,
    )


def part_name(run_id: str, records: list[dict]) -> str:
    """Deterministic per batch: a retried commit task replaces its own part instead of adding a second."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(repr((record["id"], record["row_id"], record["status"])).encode("utf-8", "surrogatepass"))
    return f"{run_id}-{digest.hexdigest()}"


def commit_stage(config: Config, output_prefix: str, run_id: str, input_spec=None) -> Stage:
    """`input_spec` (`data.inputs.InputSpec`): the carried columns' types and features, for Parquet shards."""
    output = config.output
    return Stage(
        name="commit", run=commit_records, reads=READS, adds=("status", "image_uri", "mask_uri"),
        cpus=config.job.write_cpus,
        batch_size=output.shard_rows if output.sharded else config.job.record_batch_size,
        kwargs={"output_prefix": output_prefix, "options": config.storage, "model_id": config.model.pretrained,
                "run_id": run_id, "output": output,
                "carried": input_spec.carried_schema if input_spec is not None else None,
                "features": input_spec.features if input_spec is not None else None},
    )
