"""The work list of a run: which edits it does, decided for the whole manifest without holding every id.

A run decides, for each edit of the manifest, whether an earlier run recorded it `ok` (then it is skipped) and
whether an earlier manifest row has its row id (then the later row is a duplicate). Both are answered by
hash-partitioning the manifest's edit requests together with the earlier records by row id into buckets: every
request and record of one row id lands in one bucket, and each bucket is decided on its own (`plan_bucket`).
The pipeline runs that shuffle with Ray Data (`groupby(bucket).map_groups`); this module owns what is shuffled,
the decision and the files it leaves, with no Ray. Memory is one bucket's rows.

The rules, per row id:
- The first row in manifest order (files in sorted order, then row order: its `row_index`) is the one edited;
  each later row with that id ends as one `duplicate` record, whatever the parallelism.
- An edit of that row is skipped when an `ok` record of it exists; the others are the work list (invalid ones
  become `invalid_row` records at once). A row without an id is invalid every run.
- Later rows are recorded again only when their number changed (so a re-run of a finished manifest records
  nothing); their earlier duplicate records are then superseded.
- Superseded (removed by the compaction at the end of a completed run): the earlier `error` records of an edit
  that is retried or recorded `ok`, the earlier duplicate records of a row id recorded again, every earlier
  record without an id.
- A bucket also reports which shards its earlier ok records name: a shard that no record names was left by a run
  that died between writing it and its records, and is removed.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from .compaction import SUPERSEDED_SCHEMA
from .layout import OutputLayout
from .manifest import expand_edits, needs_caption, row_id_of, validate_request
from .outputs import split_member
from .records import RECORD_SCHEMA, parquet_bytes, record_from_row, write_record_part
from .status import ErrorClass, Status
from .storage import StorageOptions, write_bytes_atomic

__all__ = [
    "PLAN_SCHEMA",
    "PLAN_SUMMARY_SCHEMA",
    "REQUEST_SCHEMA",
    "WORK_ROW_GROUP",
    "BucketPlan",
    "bucket_of",
    "plan_bucket",
    "records_to_plan_rows",
    "requests_to_plan_rows",
    "write_bucket_plan",
]

# An edit request as the work list (and the edit pass after it) carries it.
REQUEST_SCHEMA = pa.schema([
    pa.field("edit_id", pa.string()),
    pa.field("row_id", pa.string()),
    pa.field("row_index", pa.int64()),  # the manifest row's position: files in sorted order, then row order
    pa.field("target_index", pa.int32()),
    pa.field("source_image_uri", pa.string()),
    pa.field("source_prompt", pa.string()),
    pa.field("target_prompt", pa.string()),
    pa.field("inversion_prompt", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("source_concept", pa.string()),
    pa.field("target_concept", pa.string()),
    pa.field("status", pa.string()),  # pending, or error for a request that cannot be edited
    pa.field("error", pa.string()),
    pa.field("error_class", pa.string()),
])

# Rows per row group of a work-list file: the edit pass reads slices of it, each only the row groups it needs.
WORK_ROW_GROUP = 1024

_REQUEST, _RECORD = 0, 1
# What is shuffled: requests (kind 0) and earlier records (kind 1: edit_id, row_id, status and file set).
PLAN_SCHEMA = pa.schema([
    pa.field("bucket", pa.int32()),
    pa.field("kind", pa.int8()),
    *REQUEST_SCHEMA,
    pa.field("file", pa.string()),  # an earlier record's file, by its name under PREFIX/manifest
    pa.field("shard", pa.string()),  # the name of the shard an earlier ok record's outputs are in, if any
])
# What a bucket reports back (write_bucket_plan): its counts and the files it wrote under PREFIX/_work/<run_id>.
PLAN_SUMMARY_SCHEMA = pa.schema([
    pa.field("bucket", pa.int32()),
    pa.field("pending", pa.int64()),
    pa.field("skipped", pa.int64()),
    pa.field("invalid", pa.int64()),
    pa.field("duplicates", pa.int64()),
    pa.field("captions_needed", pa.int64()),
    pa.field("concepts", pa.list_(pa.string())),
    pa.field("work_uri", pa.string()),
    pa.field("superseded_uri", pa.string()),
    pa.field("shards", pa.list_(pa.string())),  # the shards its earlier ok records name
])
_STRINGS = ("source_prompt", "target_prompt", "inversion_prompt", "source_concept", "target_concept")
_INT64 = 2**63


def bucket_of(row_id: str | None, buckets: int) -> int:
    """The bucket of a row id: a stable hash (the same in every process and on every host) modulo `buckets`.
    Rows without an id all go to bucket 0 (they are invalid and never collide)."""
    if not row_id:
        return 0
    digest = hashlib.blake2b(row_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def requests_to_plan_rows(batch: pa.Table, *, base_dir: str | None, job_seed: int, buckets: int) -> pa.Table:
    """Manifest rows (with a `row_index` column) -> one plan row per edit request: validated and seeded.

    A request that cannot be edited carries status `error` and its reason; mistyped values that the error names
    are made to fit the schema (prompts stringified, a seed outside int64 dropped).
    """
    from diffedit_batch.seeds import derive_seed

    rows = []
    for row in batch.to_pylist():
        row_index = row.pop("row_index")
        for request in expand_edits(row, base_dir=base_dir):
            plan = {**request.to_dict(), "row_index": row_index, "status": Status.PENDING, "kind": _REQUEST,
                    "bucket": bucket_of(request.row_id, buckets)}
            # A row without a source is valid: the captions stage supplies one whenever the work list needs it.
            problem = validate_request(request, caption_available=True)
            if problem is not None:
                plan.update(status=Status.ERROR, error_class=ErrorClass.INVALID_ROW, error=problem)
            elif plan["seed"] is None:
                plan["seed"] = derive_seed(job_seed, request.row_id)
            for name in _STRINGS:
                if plan[name] is not None and not isinstance(plan[name], str):
                    plan[name] = repr(plan[name])[:200]
            seed = plan["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -_INT64 <= seed < _INT64):
                plan["seed"] = None
            rows.append(plan)
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


def records_to_plan_rows(records: pa.Table, *, file: str, buckets: int) -> pa.Table:
    """Earlier records of one file (columns `id`, `row_id`, `status`, and `image_uri` when shards are to be
    accounted for) -> plan rows. A record without a `row_id` (written by another tool) is keyed by the row id its
    edit id implies."""
    ids = records.column("id").to_pylist()
    row_ids = [
        row_id if row_id is not None else (row_id_of(edit_id) if edit_id else None)
        for edit_id, row_id in zip(ids, records.column("row_id").to_pylist())
    ]
    n = records.num_rows
    columns = {
        "bucket": pa.array([bucket_of(row_id, buckets) for row_id in row_ids], pa.int32()),
        "kind": pa.array([_RECORD] * n, pa.int8()),
        "edit_id": pa.array(ids, pa.string()),
        "row_id": pa.array(row_ids, pa.string()),
        "status": records.column("status").cast(pa.string()),
        "file": pa.array([file] * n, pa.string()),
    }
    if "image_uri" in records.column_names:
        columns["shard"] = pa.array([_shard_of(uri) for uri in records.column("image_uri").to_pylist()], pa.string())
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in PLAN_SCHEMA}, schema=PLAN_SCHEMA)


def _shard_of(uri: str | None) -> str | None:
    member = split_member(uri) if uri else None
    return posixpath.basename(member[0]) if member else None


@dataclass
class BucketPlan:
    """What one bucket decided: its work list, the records it writes now, the records it supersedes, counts."""

    bucket: int
    work: pa.Table  # pending requests (REQUEST_SCHEMA), sorted by (row_index, target_index): targets adjacent
    records: list[dict]  # invalid_row and duplicate records, to write before the edits start
    superseded: pa.Table  # SUPERSEDED_SCHEMA
    skipped: int = 0  # edits recorded ok earlier
    invalid: int = 0
    duplicates: int = 0  # duplicate records written now
    captions_needed: int = 0  # work rows whose picture gets a BLIP caption
    concepts: list[str] = field(default_factory=list)  # distinct concepts of the work rows
    shards: list[str] = field(default_factory=list)  # names of the shards the earlier ok records name

    @property
    def pending(self) -> int:
        return self.work.num_rows


def plan_bucket(
    table: pa.Table, *, caption_inversion: bool, model_id: str, run_id: str
) -> BucketPlan:
    """Decide one bucket of plan rows (see the module docstring for the rules)."""
    frame = pl.from_arrow(table)
    bucket = int(frame.get_column("bucket")[0]) if frame.height else 0
    has_id = pl.col("row_id").is_not_null() & (pl.col("row_id") != "")
    requests = frame.filter(pl.col("kind") == _REQUEST)
    earlier = frame.filter(pl.col("kind") == _RECORD).select("row_id", "edit_id", "status", "file", "shard")
    earlier_with_id = earlier.filter(pl.col("edit_id").is_not_null() & (pl.col("edit_id") != ""))

    without_id = requests.filter(~has_id)
    with_id = requests.filter(has_id)
    first = with_id.group_by("row_id").agg(pl.col("row_index").min().alias("first_index"))
    with_id = with_id.join(first, on="row_id", how="left")
    winners = with_id.filter(pl.col("row_index") == pl.col("first_index")).drop("first_index")
    later = with_id.filter(pl.col("row_index") != pl.col("first_index"))

    ok = earlier_with_id.filter(pl.col("status") == Status.OK)
    done = ok.select("row_id", "edit_id").unique()
    todo = winners.join(done, on=["row_id", "edit_id"], how="anti")
    skipped = winners.height - todo.height
    todo = pl.concat([todo, without_id], how="vertical_relaxed").sort(["row_index", "target_index"], nulls_last=False)
    invalid = todo.filter(pl.col("status") == Status.ERROR)
    pending = todo.filter(pl.col("status") == Status.PENDING)

    # One duplicate record per later row (its first target stands for it), written again only when the number of
    # later rows of the id changed since the duplicate records that exist.
    later_rows = later.sort(["row_index", "target_index"], nulls_last=False).unique(
        subset=["row_index"], keep="first", maintain_order=True
    )
    now = later_rows.group_by("row_id").len("now")
    before = earlier_with_id.filter(pl.col("status") == Status.DUPLICATE).group_by("row_id").len("before")
    changed = now.join(before, on="row_id", how="left").filter(pl.col("now") != pl.col("before").fill_null(0))
    duplicates = later_rows.join(changed.select("row_id"), on="row_id", how="semi")

    errors = earlier_with_id.filter(pl.col("status") == Status.ERROR)
    superseded = pl.concat([
        # leftovers: error records of edits recorded ok
        errors.join(done, on=["row_id", "edit_id"], how="semi"),
        # earlier errors of edits this run tries again, or records invalid again
        errors.join(todo.select("row_id", "edit_id"), on=["row_id", "edit_id"], how="semi"),
        # earlier duplicate records of ids whose duplicates are recorded again
        earlier_with_id.filter(pl.col("status") == Status.DUPLICATE).join(changed.select("row_id"), on="row_id",
                                                                            how="semi"),
        # every record without an id: such rows are recorded again each run
        earlier.filter(pl.col("edit_id").is_null() | (pl.col("edit_id") == "")),
    ], how="vertical_relaxed").select(pl.col("file"), pl.col("edit_id").alias("id"), pl.col("status")).unique()

    records = [record_from_row(row, model_id, run_id) for row in invalid.to_dicts()]
    for row in duplicates.to_dicts():
        row.update(edit_id=row["row_id"], target_index=None, status=Status.DUPLICATE,
                   error_class=ErrorClass.DUPLICATE_ID,
                   error=f"duplicate id {row['row_id']!r}: manifest row {row['first_index']} has it and is the one "
                         f"edited (this is manifest row {row['row_index']})")
        records.append(record_from_row(row, model_id, run_id))

    concepts = dict.fromkeys(
        concept
        for column in ("source_concept", "target_concept")
        for concept in pending.get_column(column).drop_nulls().unique(maintain_order=True).to_list()
    )
    sources = zip(pending.get_column("source_prompt").to_list(), pending.get_column("source_concept").to_list())
    return BucketPlan(
        bucket=bucket,
        work=_to_arrow(pending, REQUEST_SCHEMA),
        records=records,
        superseded=_to_arrow(superseded.sort(["file", "id"], nulls_last=False), SUPERSEDED_SCHEMA),
        skipped=skipped,
        invalid=invalid.height,
        duplicates=duplicates.height,
        captions_needed=sum(needs_caption(prompt, concept, caption_inversion) for prompt, concept in sources),
        concepts=list(concepts),
        shards=ok.get_column("shard").drop_nulls().unique().sort().to_list(),
    )


def _to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """A polars frame as a table of `schema` (polars hands back large strings; the work list uses plain ones)."""
    table = frame.select(schema.names).to_arrow()
    return pa.Table.from_arrays([table.column(name).cast(f.type) for name, f in zip(schema.names, schema)],
                                schema=schema)


def write_bucket_plan(plan: BucketPlan, prefix: str, run_id: str, options: StorageOptions | None) -> dict:
    """Write what a bucket decided: its records (a record part), its work list and its superseded records (files
    under `PREFIX/_work/<run_id>/`, which the edit pass and the final compaction read). Returns its summary."""
    layout = OutputLayout(prefix)
    write_record_part(prefix, plan.records, options, part_name=f"{run_id}-plan-{plan.bucket:05d}",
                      schema=RECORD_SCHEMA)
    work_uri = superseded_uri = None
    if plan.pending:
        work_uri = layout.work_file(run_id, f"work-{plan.bucket:05d}")
        write_bytes_atomic(work_uri, parquet_bytes(plan.work, row_group_size=WORK_ROW_GROUP), options)
    if plan.superseded.num_rows:
        superseded_uri = layout.work_file(run_id, f"superseded-{plan.bucket:05d}")
        write_bytes_atomic(superseded_uri, parquet_bytes(plan.superseded), options)
    return {
        "bucket": plan.bucket, "pending": plan.pending, "skipped": plan.skipped, "invalid": plan.invalid,
        "duplicates": plan.duplicates, "captions_needed": plan.captions_needed, "concepts": plan.concepts,
        "work_uri": work_uri, "superseded_uri": superseded_uri, "shards": plan.shards,
    }

