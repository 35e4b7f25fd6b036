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
- An edit of that row is done (skipped) when an `ok` record of it was made for the same request under the same
  settings: both fingerprints of the record (`data.fingerprints`) equal the request's. An `ok` record of another
  request (the row's prompt, picture or seed changed) is `changed`: the edit is done again. An `ok` record of the
  same request under other settings is done or done again as the run's settings policy says (`stop`, which plans
  it as `redo` and lets the driver refuse the run; `redo`; `keep`); one written before fingerprints existed has
  unknown settings and request, and follows the unknown policy (`keep` by default, or `redo`). The rest are the
  work list (invalid ones become `invalid_row` records at once). A row without an id is invalid every run.
- Candidates (several edits per request): a candidate's record counts for its request (`request_id_of`), and a
  `filtered` record (a candidate not kept) says the request was edited as an `ok` one does: a request none of whose
  candidates passed is done too. A request done again supersedes all its earlier candidates' records.
- Later rows are recorded again only when their number changed (so a re-run of a finished manifest records
  nothing); their earlier duplicate records are then superseded.
- Superseded (removed by the compaction at the end of a completed run): the earlier `error` records of an edit
  that is retried or recorded `ok`, the earlier `ok` records of an edit done again, the `ok` records of a done
  edit that another file's record of the same request and settings outlived, the earlier duplicate records of a
  row id recorded again, every earlier record without an id. A superseded record's loose files are deleted with
  it: an edit done again is written under new names (`output_tag`), so no record names another edit's pixels;
  a shard member that no record names any more stays in its shard until no record names the shard.
- A done edit is checked against its picture (`identify`, `job.verify_sources`): when storage's identity of the
  picture (data.sources) differs from the one its record holds, the edit is `changed` and done again. Records
  from before identities were recorded are done as they are.
- A bucket also reports which shards its earlier ok records name: a shard that no record names was left by a run
  that died between writing it and its records, and is removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from .augment import Recipe, RegionProblem, TemplateProblem, draw_targets
from .compaction import SUPERSEDED_SCHEMA
from .fingerprints import request_fingerprint
from .layout import OutputLayout
from .manifest import expand_edits, needs_caption, row_id_of, validate_request
from .outputs import split_member
from .records import RECORD_SCHEMA, parquet_bytes, record_from_row, request_id_of, write_record_part
from .reselect import SCORE_COLUMNS, Selection, reselect, scores_json
from .status import ErrorClass, Status
from .storage import StorageOptions, write_bytes_atomic

__all__ = [
    "PLAN_SCHEMA",
    "PLAN_SUPERSEDED_SCHEMA",
    "PLAN_SUMMARY_SCHEMA",
    "REQUEST_SCHEMA",
    "WORK_ROW_GROUP",
    "MAX_SETTINGS_CHANGES",
    "SETTINGS_POLICIES",
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
    # the input row's carried columns, JSON {column: value as stored} (`input.carry_columns`); null: none
    pa.field("carried", pa.string()),
    pa.field("status", pa.string()),  # pending, or error for a request that cannot be edited
    pa.field("error", pa.string()),
    pa.field("error_class", pa.string()),
    # what made the edit (data.fingerprints): the request's, and the settings' it is made under
    pa.field("request_fingerprint", pa.string()),
    pa.field("settings_fingerprint", pa.string()),
    # augmenting a labelled dataset (data.augment): the row's class as text, and its region
    pa.field("class_name", pa.string()),
    pa.field("region_boxes", pa.list_(pa.list_(pa.float64()))),
    pa.field("region_mask_uri", pa.string()),
    pa.field("region_mask", pa.binary()),
    # set (to the run's id) when the edit replaces an earlier ok edit: its files get names of their own, so the
    # earlier record keeps naming the pixels it describes until it is removed (data.layout)
    pa.field("output_tag", pa.string()),
])
# What the plan does with the earlier ok records of an edit made under other settings, or unknown ones (records
# from before fingerprints): `stop` plans them as `redo` and the driver refuses the run before any work.
SETTINGS_POLICIES = ("stop", "redo", "keep")
# Most (earlier, current) settings fingerprint pairs a bucket reports: enough to name what changed.
MAX_SETTINGS_CHANGES = 16

# Rows per row group of a work-list file: the edit pass reads slices of it, each only the row groups it needs.
WORK_ROW_GROUP = 1024

_REQUEST, _RECORD = 0, 1
# What is shuffled: requests (kind 0) and earlier records (kind 1: edit_id, row_id, status and file set).
PLAN_SCHEMA = pa.schema([
    pa.field("bucket", pa.int32()),
    pa.field("kind", pa.int8()),
    *REQUEST_SCHEMA,
    pa.field("file", pa.string()),  # an earlier record's file, by its name under PREFIX/manifest
    pa.field("record_id", pa.string()),  # an earlier record's own id: a candidate's (`id~cK`), its request's edit_id
    pa.field("shard", pa.string()),  # the name of the shard an earlier ok record's outputs are in, if any
    pa.field("source_identity", pa.string()),  # an earlier record's picture identity (data.sources), if recorded
    # an earlier candidate's record: its index, its scores (JSON) and whether its pictures were written, read when
    # the run has candidates, so that the bucket can select again from the scores (data.reselect)
    pa.field("candidate", pa.int32()),
    pa.field("scores", pa.string()),
    pa.field("has_image", pa.bool_()),
])
# The records a bucket supersedes: SUPERSEDED_SCHEMA, the request each record was made for, and whether this run's
# edit pass replaces it (`pending`: its request is in the work list). The others are settled by the plan itself and
# removed before the edits start; the pending ones once their new records exist (the end of the run, or the
# clean-up of a run that stops).
PLAN_SUPERSEDED_SCHEMA = pa.schema([
    *SUPERSEDED_SCHEMA,
    pa.field("request_id", pa.string()),
    pa.field("pending", pa.bool_()),
    pa.field("keep_files", pa.bool_()),  # the record's loose files stay: a record that outlives it may name them
])
# What a bucket reports back (write_bucket_plan): its counts and the files it wrote under PREFIX/_work/<run_id>.
PLAN_SUMMARY_SCHEMA = pa.schema([
    pa.field("bucket", pa.int32()),
    pa.field("pending", pa.int64()),
    pa.field("skipped", pa.int64()),
    pa.field("changed", pa.int64()),  # edits done earlier for another request (or picture), done again
    pa.field("sources_changed", pa.int64()),  # of those, edits whose picture changed under the same URI
    pa.field("unverified", pa.int64()),  # done edits whose records hold no picture identity (not checked)
    pa.field("settings_changed", pa.int64()),  # edits done earlier for this request under other settings
    pa.field("unknown_settings", pa.int64()),  # edits done earlier by a record without fingerprints
    pa.field("settings_changes", pa.list_(pa.string())),  # distinct "earlier:current" settings fingerprints
    pa.field("invalid", pa.int64()),
    pa.field("duplicates", pa.int64()),
    pa.field("captions_needed", pa.int64()),
    pa.field("concepts", pa.list_(pa.string())),
    pa.field("work_uri", pa.string()),
    pa.field("records_uri", pa.string()),  # the record part of its invalid rows and duplicates
    pa.field("superseded_uri", pa.string()),
    pa.field("reselected", pa.int64()),  # done requests whose candidates were selected again from their scores
    pa.field("reselected_uri", pa.string()),  # the records whose verdict changed (data.reselect.RESTATUS_SCHEMA)
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


def requests_to_plan_rows(batch: pa.Table, *, base_dir: str | None, job_seed: int, buckets: int,
                          settings: Sequence[str] = ("",) * 4, caption_inversion: bool = False,
                          recipe: Recipe | None = None) -> pa.Table:
    """Manifest rows (with a `row_index` column, and `class_rank` with `augment.balance_by`) -> one plan row per edit
    request: validated, seeded and fingerprinted. With a `recipe` (`data.augment`), prompts come from templates, a
    row edits the targets its recipe draws (a row whose quota is 0 makes no edit), and carries its class and region;
    a null value a template or the recipe needs, or a bad box, makes the row one invalid_row record naming it.

    A request that cannot be edited carries status `error` and its reason; mistyped values that the error names
    are made to fit the schema (prompts stringified, a seed outside int64 dropped). `settings`: the run's settings
    fingerprints by what an edit uses, `settings[2 * uses_concepts + uses_caption]` (`config.fingerprint`);
    `caption_inversion` says whether every edit uses a caption.
    """
    from diffedit_batch.seeds import derive_seed

    rows = []
    for row in batch.to_pylist():
        row_index = row.pop("row_index")
        class_rank = row.pop("class_rank", None)
        # an input row's recipe columns (data.inputs.RecipeColumns): the columns by name, the region mask
        fields = row.pop("fields", None)
        if fields:
            row.update({name: value for name, value in json.loads(fields).items() if name not in row
                        or row[name] is None})
        mask = row.pop("region_mask_bytes", None) or row.pop("region_mask_uri", None)
        if mask is not None:
            row["region_mask"] = mask
        row.pop("region_mask_uri", None)
        extra, row_problem, wanted = {}, None, None
        if recipe is not None:
            try:
                row = recipe.fill(row)
                extra = _recipe_columns(row, recipe)
                wanted = recipe.edits_wanted(row, class_rank)
            except (TemplateProblem, RegionProblem) as error:
                row_problem = str(error)
        requests = expand_edits(row, base_dir=base_dir)
        if row_problem is not None:  # the row's one record, under its id
            requests = [dataclasses.replace(requests[0], edit_id=requests[0].row_id, target_index=None)]
        elif wanted is not None and requests[0].row_id:
            requests = _drawn(requests, wanted, job_seed)
        for request in requests:
            plan = {**request.to_dict(), **extra, "row_index": row_index, "status": Status.PENDING, "kind": _REQUEST,
                    "bucket": bucket_of(request.row_id, buckets)}
            # A row without a source is valid: the captions stage supplies one whenever the work list needs it.
            problem = row_problem or validate_request(request, caption_available=True)
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
            plan["request_fingerprint"] = request_fingerprint(plan)
            uses_concepts = plan["source_concept"] is not None or plan["target_concept"] is not None
            uses_caption = needs_caption(plan["source_prompt"], plan["source_concept"], caption_inversion,
                                         plan["target_prompt"])
            plan["settings_fingerprint"] = settings[2 * uses_concepts + uses_caption]
            rows.append(plan)
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


def _recipe_columns(row: dict, recipe: Recipe) -> dict:
    """What a recipe adds to each request of a row: its class and its region (boxes; a mask's URI or bytes)."""
    extra = {"class_name": recipe.class_of(row), "region_boxes": recipe.boxes(row)}
    mask = row.get("region_mask")
    if isinstance(mask, dict):  # the datasets image struct: its bytes win, else its path
        mask = mask.get("bytes") or mask.get("path")
        if not mask or isinstance(mask, str) and not mask.strip():
            # not a row without a region: with region.mode outside, it would edit what the mask was to keep
            raise RegionProblem("region_mask is a picture struct with neither bytes nor path")
    if isinstance(mask, str) and mask.strip():
        extra["region_mask_uri"] = mask.strip()
    elif isinstance(mask, (bytes, bytearray)) and mask:
        extra["region_mask"] = bytes(mask)
    return extra


def _drawn(requests: list, wanted: int, job_seed: int) -> list:
    """The `wanted` requests a row edits (`Recipe.edits_wanted`), drawn from the row's seed; none for 0."""
    from diffedit_batch.seeds import derive_seed, is_seed

    if wanted >= len(requests):
        return requests
    seed = requests[0].seed if is_seed(requests[0].seed) else derive_seed(job_seed, requests[0].row_id)
    return [requests[i] for i in draw_targets(seed, len(requests), wanted)]


def records_to_plan_rows(records: pa.Table, *, file: str, buckets: int) -> pa.Table:
    """Earlier records of one file (columns `id`, `row_id`, `status`, the fingerprints and `candidate` if the file
    has them, and `image_uri` when shards are to be accounted for) -> plan rows. A record without a `row_id` (written
    by another tool) is keyed by the row id its edit id implies. A candidate's record counts for its request: its
    plan row's `edit_id` is the request's, `record_id` its own."""
    record_ids = records.column("id").to_pylist()
    candidates = (records.column("candidate").to_pylist() if "candidate" in records.column_names
                  else [None] * records.num_rows)
    ids = [request_id_of(record_id, candidate) for record_id, candidate in zip(record_ids, candidates)]
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
        "record_id": pa.array(record_ids, pa.string()),
    }
    for name in ("request_fingerprint", "settings_fingerprint", "source_identity"):
        if name in records.column_names:
            columns[name] = records.column(name).cast(pa.string())
    if "image_uri" in records.column_names:
        uris = records.column("image_uri").to_pylist()
        columns["shard"] = pa.array([_shard_of(uri) for uri in uris], pa.string())
        columns["has_image"] = pa.array([uri is not None for uri in uris], pa.bool_())
    if "candidate" in records.column_names:
        columns["candidate"] = records.column("candidate").cast(pa.int32())
        if any(name in records.column_names for name in SCORE_COLUMNS):
            columns["scores"] = scores_json(records)
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
    superseded: pa.Table  # PLAN_SUPERSEDED_SCHEMA
    skipped: int = 0  # edits recorded ok earlier (for the same request; under the same settings, or kept)
    changed: int = 0  # edits recorded ok earlier for another request (or another picture): done again
    sources_changed: int = 0  # of those, edits whose picture changed under its URI (`identify`)
    unverified: int = 0  # done edits whose records hold no identity of their picture (written before they did)
    settings_changed: int = 0  # edits recorded ok earlier for the same request under other settings
    unknown_settings: int = 0  # edits recorded ok earlier by records without fingerprints
    settings_changes: list[str] = field(default_factory=list)  # "earlier:current" settings fingerprints
    invalid: int = 0
    duplicates: int = 0  # duplicate records written now
    captions_needed: int = 0  # work rows whose picture gets a BLIP caption
    concepts: list[str] = field(default_factory=list)  # distinct concepts of the work rows
    shards: list[str] = field(default_factory=list)  # names of the shards the earlier ok records name
    reselected: pa.Table | None = None  # RESTATUS_SCHEMA: records whose verdict a new selection changed
    reselected_requests: int = 0

    @property
    def pending(self) -> int:
        return self.work.num_rows


# How an edit's earlier ok record relates to its request now, best first (the best one decides).
_SAME, _UNKNOWN, _SETTINGS, _CHANGED = 0, 1, 2, 3


def plan_bucket(
    table: pa.Table, *, caption_inversion: bool, model_id: str, run_id: str, settings_policy: str = "stop",
    unknown_policy: str = "keep", identify: Callable[[list[str]], list[str | None]] | None = None,
    selection: Selection | None = None,
) -> BucketPlan:
    """Decide one bucket of plan rows (see the module docstring for the rules). `settings_policy` (stop, redo,
    keep): what becomes of an edit recorded ok for its request under other settings; `unknown_policy` (redo, keep):
    of one recorded ok by a record without fingerprints. `identify`: the storage identity of each of a list of
    picture URIs now (`data.sources.source_identities`); a done edit whose record holds another identity of its
    picture is `changed` and done again. None: pictures are not checked (`job.verify_sources: false`).
    `selection` (a run with candidates): the done requests' candidates are selected again from their recorded
    scores (data.reselect); a request whose new choice has no picture is done again (counted as changed)."""
    if settings_policy not in SETTINGS_POLICIES or unknown_policy not in ("redo", "keep"):
        raise ValueError(f"unknown settings policy {settings_policy!r} / {unknown_policy!r}")
    frame = pl.from_arrow(table)
    bucket = int(frame.get_column("bucket")[0]) if frame.height else 0
    has_id = pl.col("row_id").is_not_null() & (pl.col("row_id") != "")
    requests = frame.filter(pl.col("kind") == _REQUEST)
    earlier = frame.filter(pl.col("kind") == _RECORD).select(
        "row_id", "edit_id", pl.coalesce("record_id", "edit_id").alias("record_id"), "status", "file", "shard",
        "request_fingerprint", "settings_fingerprint", "source_identity", "candidate", "scores", "has_image")
    earlier_with_id = earlier.filter(pl.col("edit_id").is_not_null() & (pl.col("edit_id") != ""))

    without_id = requests.filter(~has_id)
    with_id = requests.filter(has_id)
    first = with_id.group_by("row_id").agg(pl.col("row_index").min().alias("first_index"))
    with_id = with_id.join(first, on="row_id", how="left")
    winners = with_id.filter(pl.col("row_index") == pl.col("first_index")).drop("first_index")
    later = with_id.filter(pl.col("row_index") != pl.col("first_index"))

    keys = ["row_id", "edit_id"]
    # ok records, and the filtered ones of candidates not kept: either says its request was edited
    ok = earlier_with_id.filter(pl.col("status").is_in(list(Status.DONE)))
    # Each earlier ok record of an edit to be made now, ranked by how it relates to the request.
    seen = winners.select(*keys, "request_fingerprint", "settings_fingerprint").join(
        ok.select(*keys, "file", "record_id", "status", pl.col("request_fingerprint").alias("ok_request"),
                  pl.col("settings_fingerprint").alias("ok_settings"), pl.col("source_identity").alias("ok_identity")),
        on=keys, how="inner",
    ).with_columns(
        pl.when((pl.col("ok_request") == pl.col("request_fingerprint"))
                & (pl.col("ok_settings") == pl.col("settings_fingerprint"))).then(_SAME)
        .when(pl.col("ok_request").is_null()).then(_UNKNOWN)
        .when(pl.col("ok_request") == pl.col("request_fingerprint")).then(_SETTINGS)
        .otherwise(_CHANGED).alias("match")
    )
    best = seen.group_by(keys).agg(
        pl.col("match").min(),
        (pl.col("ok_settings").filter(pl.col("match") == _SETTINGS).first() + ":"
         + pl.col("settings_fingerprint").first()).alias("change"),
    )
    kept = [_SAME] + [_UNKNOWN] * (unknown_policy == "keep") + [_SETTINGS] * (settings_policy == "keep")
    best, sources_changed, unverified = _check_sources(best, seen, winners, kept, identify)
    reselected, reselected_requests = None, 0
    if selection is not None:
        best, reselected, reselected_requests = _reselect(best, seen, ok, kept, selection)
    done = best.filter(pl.col("match").is_in(kept)).select(keys)
    redone = best.filter(~pl.col("match").is_in(kept)).select(keys)
    todo = winners.join(done, on=keys, how="anti")
    skipped = done.height
    matches = best.get_column("match")
    todo = pl.concat([todo, without_id], how="vertical_relaxed").sort(["row_index", "target_index"], nulls_last=False)
    # An edit done again gets files of its own (the run's tag), so the earlier record names its own pixels.
    todo = todo.join(redone.with_columns(pl.lit(run_id).alias("tag")), on=keys, how="left").with_columns(
        pl.col("tag").alias("output_tag")).drop("tag")
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
    # A done edit's ok records other than its match (an interrupted run left both), unless in the match's own file.
    same = seen.filter(pl.col("match") == _SAME).select(*keys, "file")
    outlived = seen.filter(pl.col("match") != _SAME).join(same.select(keys).unique(), on=keys, how="semi").join(
        same, on=[*keys, "file"], how="anti")
    # An outlived record's files are removed with it, unless the record that outlived it was written before records
    # held the picture's identity: such a record may name the very same files (a redo used to overwrite them).
    written_before = seen.filter(pl.col("match") == _SAME).group_by(keys).agg(
        pl.col("ok_identity").is_null().all().alias("keep_files"))
    outlived = outlived.join(written_before, on=keys, how="left")
    superseded = pl.concat([part.select("file", "record_id", "status", "row_id", "edit_id",
                                        (pl.col("keep_files") if "keep_files" in part.columns
                                         else pl.lit(False)).alias("keep_files")) for part in (
        # earlier ok records of edits done again, and the ones outlived
        ok.join(redone, on=keys, how="semi"),
        outlived,
        # leftovers: error records of edits recorded ok
        errors.join(done, on=keys, how="semi"),
        # earlier errors of edits this run tries again, or records invalid again
        errors.join(todo.select(keys), on=keys, how="semi"),
        # earlier duplicate records of ids whose duplicates are recorded again
        earlier_with_id.filter(pl.col("status") == Status.DUPLICATE).join(changed.select("row_id"), on="row_id",
                                                                            how="semi"),
        # every record without an id: such rows are recorded again each run
        earlier.filter(pl.col("edit_id").is_null() | (pl.col("edit_id") == "")),
    )], how="vertical_relaxed").unique()
    # Replaced by this run's edit pass (its request is in the work list), or settled by the plan itself.
    superseded = superseded.join(pending.select(keys).unique().with_columns(pl.lit(True).alias("pending")), on=keys,
                                 how="left").select(
        pl.col("file"), pl.col("record_id").alias("id"), pl.col("status"), pl.col("edit_id").alias("request_id"),
        pl.col("pending").fill_null(False), pl.col("keep_files").fill_null(False))

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
        superseded=_to_arrow(superseded.sort(["file", "id"], nulls_last=False), PLAN_SUPERSEDED_SCHEMA),
        skipped=skipped,
        changed=int((matches == _CHANGED).sum()),
        sources_changed=sources_changed,
        unverified=unverified,
        reselected=reselected,
        reselected_requests=reselected_requests,
        settings_changed=int((matches == _SETTINGS).sum()),
        unknown_settings=int((matches == _UNKNOWN).sum()),
        settings_changes=best.get_column("change").drop_nulls().unique().sort().head(MAX_SETTINGS_CHANGES).to_list(),
        invalid=invalid.height,
        duplicates=duplicates.height,
        captions_needed=sum(needs_caption(prompt, concept, caption_inversion, target)
                        for (prompt, concept), target in zip(sources, pending.get_column("target_prompt").to_list())),
        concepts=list(concepts),
        shards=ok.get_column("shard").drop_nulls().unique().sort().to_list(),
    )


def _check_sources(best: pl.DataFrame, seen: pl.DataFrame, winners: pl.DataFrame, kept: list[int],
                   identify: Callable[[list[str]], list[str | None]] | None) -> tuple[pl.DataFrame, int, int]:
    """`best` with the done edits whose picture changed since their record (its identity now differs from the one
    recorded, or the picture is gone) turned `changed`; and how many were, and how many done edits' records hold
    no identity (from before records did: they stay done). One `identify` call for the bucket's done pictures."""
    keys = ["row_id", "edit_id"]
    done = best.filter(pl.col("match").is_in(kept)).select(keys)
    if identify is None or not done.height:
        return best, 0, 0
    # the identity in the records that made the edit done (its best match)
    recorded = (seen.join(best.select(*keys, "match"), on=[*keys, "match"], how="semi").group_by(keys)
                .agg(pl.col("ok_identity").drop_nulls().first().alias("recorded")))
    check = done.join(recorded, on=keys, how="left").join(
        winners.select(*keys, "source_image_uri").unique(subset=keys), on=keys, how="left")
    unverified = check.filter(pl.col("recorded").is_null()).height
    check = check.filter(pl.col("recorded").is_not_null())
    if not check.height:
        return best, 0, unverified
    now = identify(check.get_column("source_image_uri").to_list())
    moved = check.with_columns(pl.Series("now", now, dtype=pl.String)).filter(
        pl.col("now").is_null() | (pl.col("now") != pl.col("recorded"))).select(keys)
    if not moved.height:
        return best, 0, unverified
    best = best.join(moved.with_columns(pl.lit(True).alias("moved")), on=keys, how="left").with_columns(
        pl.when(pl.col("moved").fill_null(False)).then(pl.lit(_CHANGED)).otherwise(pl.col("match")).alias("match")
    ).drop("moved")
    return best, moved.height, unverified


def _reselect(best: pl.DataFrame, seen: pl.DataFrame, ok: pl.DataFrame, kept: list[int],
              selection: Selection) -> tuple[pl.DataFrame, pa.Table, int]:
    """Select again among the candidates of the done requests (data.reselect): `best` with the requests whose new
    choice has no picture turned `changed`, the records whose verdict changed, and how many requests had some."""
    keys = ["row_id", "edit_id"]
    done = best.filter(pl.col("match").is_in(kept)).select(*keys, "match")
    # the records that made each request done (its best match), with their scores
    records = seen.join(done, on=[*keys, "match"], how="semi").select(*keys, "record_id", "file").join(
        ok.select(*keys, "record_id", "file", "status", "candidate", "scores", "has_image"),
        on=[*keys, "record_id", "file"], how="inner")
    changes, again, requests = reselect(records, selection)
    if again.height:
        best = best.join(again.with_columns(pl.lit(True).alias("moved")), on=keys, how="left").with_columns(
            pl.when(pl.col("moved").fill_null(False)).then(pl.lit(_CHANGED)).otherwise(pl.col("match"))
            .alias("match")).drop("moved")
    return best, changes, requests


def _to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """A polars frame as a table of `schema` (polars hands back large strings; the work list uses plain ones)."""
    table = frame.select(schema.names).to_arrow()
    return pa.Table.from_arrays([table.column(name).cast(f.type) for name, f in zip(schema.names, schema)],
                                schema=schema)


def write_bucket_plan(plan: BucketPlan, prefix: str, run_id: str, options: StorageOptions | None) -> dict:
    """Write what a bucket decided: its records (a record part), its work list and its superseded records (files
    under `PREFIX/_work/<run_id>/`, which the edit pass and the final compaction read). Returns its summary."""
    layout = OutputLayout(prefix)
    records_uri = write_record_part(prefix, plan.records, options, part_name=f"{run_id}-plan-{plan.bucket:05d}",
                                    schema=RECORD_SCHEMA)
    work_uri = superseded_uri = None
    if plan.pending:
        work_uri = layout.work_file(run_id, f"work-{plan.bucket:05d}")
        write_bytes_atomic(work_uri, parquet_bytes(plan.work, row_group_size=WORK_ROW_GROUP), options)
    if plan.superseded.num_rows:
        superseded_uri = layout.work_file(run_id, f"superseded-{plan.bucket:05d}")
        write_bytes_atomic(superseded_uri, parquet_bytes(plan.superseded), options)
    reselected_uri = None
    if plan.reselected is not None and plan.reselected.num_rows:
        reselected_uri = layout.work_file(run_id, f"reselected-{plan.bucket:05d}")
        write_bytes_atomic(reselected_uri, parquet_bytes(plan.reselected), options)
    return {
        "bucket": plan.bucket, "pending": plan.pending, "skipped": plan.skipped, "changed": plan.changed,
        "sources_changed": plan.sources_changed, "unverified": plan.unverified,
        "settings_changed": plan.settings_changed, "unknown_settings": plan.unknown_settings,
        "settings_changes": plan.settings_changes, "invalid": plan.invalid, "duplicates": plan.duplicates,
        "captions_needed": plan.captions_needed, "concepts": plan.concepts, "work_uri": work_uri,
        "records_uri": records_uri, "superseded_uri": superseded_uri, "shards": plan.shards,
        "reselected": plan.reselected_requests, "reselected_uri": reselected_uri,
    }

