"""Candidates chosen again from their recorded scores: a change of `candidates.keep`, `rank_by`, `min`, `max` or
`keep_rejected` is no settings change and edits nothing again.

Each bucket of the plan selects again (`recipe.candidates.select_candidates`) among the recorded candidates of
each request done under the run's settings, and compares with what their records say:

- nothing differs: nothing is done;
- a candidate to keep now has no picture (it was filtered and `keep_rejected` was off): the request is edited
  again (`reselect` says so; the plan counts it as changed);
- else the records whose verdict changed are rewritten in place (`restatus_record_file`): `ok` <-> `filtered`
  with the new reason; a candidate demoted (or a filtered one under `keep_rejected: false`) loses its loose
  pictures, deleted once no record names them; a shard member stays in its shard.

Pure data: polars and pyarrow, no Ray (`pipeline.reselect` runs the rewrites by file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .outputs import split_member
from .records import RecordFile
from .status import Status
from .storage import StorageOptions, delete, write_bytes_atomic

__all__ = ["RESTATUS_SCHEMA", "SCORE_COLUMNS", "Selection", "reselect", "restatus_record_file", "scores_json"]

# Scores a selection may use, as records hold them (recipe.candidates.SCORES).
SCORE_COLUMNS = ("clip_directional", "clip_image", "clip_target_score", "mask_coverage", "background_psnr",
                 "background_ssim")
# A record whose verdict changed: in which file, which record (id and its status now), what it becomes.
RESTATUS_SCHEMA = pa.schema([
    pa.field("file", pa.string()),
    pa.field("id", pa.string()),
    pa.field("status", pa.string()),
    pa.field("new_status", pa.string()),
    pa.field("filter_reason", pa.string()),
    pa.field("drop_files", pa.bool_()),  # its pictures are no longer written: deleted, its URIs nulled
])


@dataclass(frozen=True)
class Selection:
    """The selection of a run's config (`candidates` less what draws them)."""

    keep: int
    rank_by: str
    floors: Mapping[str, float]
    ceilings: Mapping[str, float]
    keep_rejected: bool

    @classmethod
    def of(cls, candidates) -> "Selection":
        return cls(candidates.keep, candidates.rank_by, dict(candidates.min), dict(candidates.max),
                   candidates.keep_rejected)


def scores_json(records: pa.Table) -> pa.Array:
    """Each record's scores (`SCORE_COLUMNS` it has) as JSON, null for a record that is not a candidate's."""
    present = [name for name in SCORE_COLUMNS if name in records.column_names]
    columns = [records.column(name).to_pylist() for name in present]
    candidates = (records.column("candidate").to_pylist() if "candidate" in records.column_names
                  else [None] * records.num_rows)
    return pa.array([None if candidate is None else json.dumps(dict(zip(present, values)))
                     for candidate, *values in zip(candidates, *columns)], pa.string())


def reselect(records: pl.DataFrame, selection: Selection) -> tuple[pa.Table, pl.DataFrame, int]:
    """Select again among `records`: the recorded candidates (`row_id`, `edit_id`: the request, `record_id`, `file`,
    `status`, `candidate`, `scores`, `has_image`) of requests done under the run's settings. Returns the records whose
    verdict changed (RESTATUS_SCHEMA), the requests (`row_id`, `edit_id`) that need editing again (a candidate to
    keep has no picture), and how many requests had verdicts changed."""
    from diffedit_batch.recipe.candidates import select_candidates

    changes: list[dict[str, Any]] = []
    again: list[tuple[str, str]] = []
    requests = 0
    candidates = records.filter(pl.col("candidate").is_not_null()).sort(["row_id", "edit_id", "candidate"])
    for (row_id, edit_id), group in candidates.group_by(["row_id", "edit_id"], maintain_order=True):
        rows = group.unique(subset=["candidate"], keep="first", maintain_order=True).to_dicts()
        scores = [json.loads(row["scores"] or "{}") for row in rows]
        verdicts = select_candidates(scores, keep=selection.keep, rank_by=selection.rank_by,
                                     floors=selection.floors, ceilings=selection.ceilings)
        request_changes = []
        for row, verdict in zip(rows, verdicts):
            status = Status.OK if verdict.kept else Status.FILTERED
            drop = status == Status.FILTERED and not selection.keep_rejected and bool(row["has_image"])
            if verdict.kept and not row["has_image"]:
                again.append((row_id, edit_id))
                break
            if status != row["status"] or drop:
                request_changes.append({"file": row["file"], "id": row["record_id"], "status": row["status"],
                                        "new_status": status, "filter_reason": verdict.reason, "drop_files": drop})
        else:
            changes.extend(request_changes)
            requests += bool(request_changes)
    redo = pl.DataFrame(again, schema={"row_id": pl.String, "edit_id": pl.String}, orient="row")
    return pa.Table.from_pylist(changes, schema=RESTATUS_SCHEMA), redo, requests


def restatus_record_file(file: RecordFile, changes: pa.Table, options: StorageOptions | None) -> int:
    """Rewrite `file` (atomically) with the verdicts `changes` (RESTATUS_SCHEMA rows of this file) gives its
    records; then delete the loose pictures of the records that dropped them. Returns the records changed (0 for a
    file already rewritten: safe to repeat)."""
    from .compaction import _parquet_file

    wanted = {(i, s): (n, r, d) for i, s, n, r, d in zip(*(changes.column(c).to_pylist() for c in (
        "id", "status", "new_status", "filter_reason", "drop_files")))}
    parquet = _parquet_file(file, options)
    table = parquet.read()
    parquet.close()
    rows = table.to_pylist()
    changed, dropped, named = 0, set(), set()
    for row in rows:
        change = wanted.get((row.get("id"), row.get("status")))
        if change is not None:
            new_status, reason, drop = change
            row.update(status=new_status, filter_reason=reason)
            if drop:
                dropped.update(uri for uri in (row.get("image_uri"), row.get("mask_uri")) if uri)
                row.update(image_uri=None, mask_uri=None)
            changed += 1
        named.update(uri for uri in (row.get("image_uri"), row.get("mask_uri")) if uri)
    if not changed:
        return 0
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), sink, compression="zstd")
    write_bytes_atomic(file.uri, sink.getvalue(), options)
    for uri in sorted(dropped - named):
        if split_member(uri) is None:
            delete(uri, options)
    return changed
