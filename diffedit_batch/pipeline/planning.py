"""The run's plan, a Ray Data pass before the edits: resume and duplicates decided for the whole manifest.

    manifest files -> read (row_index) -> requests ┐
                                                   ├ union -> groupby(bucket).map_groups(plan and write)
    earlier record files -> id, row_id, status ────┘

Requests and earlier records are hash-partitioned by row id into buckets (`data.worklist`); each bucket is
decided on its own and writes its work list, its records (invalid rows, duplicates) and the records it
supersedes. No process holds every id: memory is a bucket's rows per task, and the driver gets one summary row
per bucket. The edit pass then streams the work list; the compaction at the end applies the superseded list.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.config import Config
from diffedit_batch.config.fingerprint import RunSettings, run_settings
from diffedit_batch.data.augment import Recipe
from diffedit_batch.data.inputs import INPUT_ROW_SCHEMA, InputSpec, read_input_rows
from diffedit_batch.data.manifest import MANIFEST_COLUMNS, Manifest, manifest_file_error
from diffedit_batch.data.records import RecordFile, read_record_file
from diffedit_batch.data.reselect import SCORE_COLUMNS, Selection
from diffedit_batch.data.sources import source_identities
from diffedit_batch.data.storage import StorageOptions, resolve
from diffedit_batch.data.worklist import (
    MAX_SETTINGS_CHANGES,
    PLAN_SCHEMA,
    PLAN_SUMMARY_SCHEMA,
    plan_bucket,
    records_to_plan_rows,
    requests_to_plan_rows,
    write_bucket_plan,
)

from .stages.spec import Stage, apply

# A bucket's rows are decided in one task: about this many (requests and earlier records) per bucket, and no more
# than BUCKET_BYTES of them in Arrow: rows with long prompts make more, smaller buckets (a reduce task holds its
# partition about three times over while sorting it, and plan_bucket copies a bucket twice more). Larger buckets
# make fewer reduce tasks (100,000 rows: a 3 x 10^6-row re-run's plan 10% faster) but a reduce task's memory then
# grows with the manifest (10^6 -> 10^7 rows: +170 MiB USS, against +73 MiB at 50,000).
ROWS_PER_BUCKET = 50_000
BUCKET_BYTES = 32 * 2**20
# Plan rows of an earlier record (ids, status, fingerprints, its file's name) in Arrow, about: they hold no prompts.
EARLIER_ROW_BYTES = 256
# How the bytes of a request's plan rows are estimated before the pass: the first SAMPLE_ROWS rows of up to
# SAMPLE_FILES manifest files, spread over the manifest, made into plan rows (targets expanded, prompts included).
SAMPLE_ROWS = 512
SAMPLE_FILES = 4
# Up to this many buckets the shuffle is Ray Data's pull-based sort shuffle: few objects at this size, and it starts
# in well under a second, where a hash shuffle stalls for seconds behind an upstream map stage. Above it, Ray Data's
# disk-based hash shuffle (`DataContext.use_disk_based_hash_shuffle`), whose cost grows with the data rather than
# with blocks x partitions: each map task writes its rows, split by partition and zstd-compressed, to one file on
# its node's local disk (under $TMPDIR) and hands the driver one handle; each reduce task fetches its partition from
# those files. The shuffled plan never waits in the object store (with Ray's object-store shuffle it did, whole,
# until the reduce: the store pages a worker wrote grew +390 MiB from 10^6 to 10^7 rows), and the driver keeps a
# handle per map task instead of an object per map task and partition, so a partition can be a single bucket.
SMALL_PLAN_BUCKETS = 8
# The hash shuffle's partitions: a bucket each up to MAX_PARTITIONS, so a reduce task holds one bucket however large
# the manifest (10^7 + 10^7 rows make 400 buckets); past it (10^8 + 10^8 rows make 4,000) a partition holds a few.
MAX_PARTITIONS = 1024
# Raw bytes of plan rows a shuffle map task takes at once (Ray Data merges input blocks up to this, per node).
SHUFFLE_INPUT_BYTES = 64 * 2**20
# Blocks of the plan pass stay small (Ray's default: 128 MiB): a read task's memory is a few of them, whatever the
# size of the manifest.
PLAN_BLOCK_BYTES = 8 * 2**20
# Object-store memory the plan pass may fill: the plan rows that wait for the shuffle's map tasks. Without a cap the
# read tasks run ahead and their blocks wait in the store, as pages of the pool worker that wrote them (its USS):
# 900 MiB in one idle worker at 10^7 rows against about 200 MiB at 10^6. With it the queue is this size at any size.
PLAN_STORE_BYTES = 256 * 2**20
_FILES_PER_TASK = 16
# What the input's reader hands on: the manifest's columns, each row numbered, its carried columns and problems.
_MANIFEST_ROW = tuple(INPUT_ROW_SCHEMA.names)


class SettingsChanged(RuntimeError):
    """Edits of the manifest were recorded ok under other settings and the run was not told what to do with them
    (`--on-settings-change redo|keep`): the run stops before any work."""


@dataclass
class RunPlan:
    """What the plan pass decided, summed over its buckets."""

    pending: int = 0
    skipped: int = 0
    changed: int = 0
    sources_changed: int = 0  # of `changed`: edits whose picture changed under its URI
    unverified: int = 0  # done edits whose records hold no identity of their picture (not checked)
    reselected: int = 0  # done requests whose candidates were selected again from their recorded scores
    reselected_files: list[str] = field(default_factory=list)  # the records whose verdict changed, by bucket
    settings_changed: int = 0
    unknown_settings: int = 0
    settings_changes: set[tuple[str, str]] = field(default_factory=set)  # (earlier, current) settings fingerprints
    invalid: int = 0
    duplicates: int = 0
    captions_needed: int = 0
    concepts: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # every class of the label column, as text (clip_label)
    work_files: list[tuple[str, int]] = field(default_factory=list)  # (uri, rows), in bucket order
    superseded_files: list[str] = field(default_factory=list)
    record_files: list[str] = field(default_factory=list)  # the plan's own record parts (invalid rows, duplicates)
    shards: set[str] = field(default_factory=set)  # names of the shards that earlier records name
    buckets: int = 0
    partitions: int = 0
    estimated_bytes: int = 0  # of the plan's rows (`estimate_plan_bytes`), which sized its buckets

    def add(self, summary: dict) -> None:
        for name in ("pending", "skipped", "changed", "sources_changed", "unverified", "reselected", "settings_changed", "unknown_settings", "invalid", "duplicates",
                     "captions_needed"):
            setattr(self, name, getattr(self, name) + summary[name])
        if len(self.settings_changes) < MAX_SETTINGS_CHANGES:
            self.settings_changes.update(tuple(change.split(":", 1)) for change in summary["settings_changes"] or ())
        if summary["records_uri"]:
            self.record_files.append(summary["records_uri"])
        self.concepts = list(dict.fromkeys([*self.concepts, *summary["concepts"]]))
        if summary["work_uri"]:
            self.work_files.append((summary["work_uri"], summary["pending"]))
        if summary["superseded_uri"]:
            self.superseded_files.append(summary["superseded_uri"])
        if summary["reselected_uri"]:
            self.reselected_files.append(summary["reselected_uri"])
        self.shards.update(summary["shards"] or ())


def settings_change_message(plan: RunPlan, settings: RunSettings, described: dict[str, dict]) -> str:
    """What a change of settings did to the plan: how many edits, and what differs (`key: earlier
    -> now`, the earlier settings read from the run files, `described`)."""
    from diffedit_batch.data.fingerprints import settings_differences

    lines: dict[str, None] = {}
    for earlier, current in sorted(plan.settings_changes):
        if earlier in described:
            lines.update(dict.fromkeys(settings_differences(described[earlier], settings.settings[current])))
        else:
            lines[f"settings {earlier} (no run file describes them)"] = None
    return (f"{plan.settings_changed} edit(s) of this manifest were recorded ok under other settings: "
            f"{'; '.join(lines) or 'unknown differences'}")


SETTINGS_ADVICE = ("nothing was done. Re-run with --on-settings-change redo to edit them again under these settings, "
                   "or --on-settings-change keep to keep them (their records keep the fingerprint of the settings "
                   "that made them)")


def read_earlier_records(batch: pa.Table, *, options: StorageOptions, buckets: int, with_shards: bool = False,
                         with_scores: bool = False):
    """Plan rows of the earlier records in each file named in `batch` (`uri`, `size`, `name`): seven columns read
    (ids, status, fingerprints, candidate, the picture's identity), and the outputs' URIs when the output has shards
    (to tell which shards records name); with `with_scores` (a run with candidates) the scores and the output URIs
    too, to select again from them."""
    columns = ["id", "row_id", "status", "request_fingerprint", "settings_fingerprint", "candidate",
               "source_identity", *(["image_uri"] if with_shards or with_scores else []),
               *(SCORE_COLUMNS if with_scores else ())]
    for uri, size, name in zip(*(batch.column(c).to_pylist() for c in ("uri", "size", "name"))):
        records = read_record_file(RecordFile(uri, size, name), options, columns=columns)
        rows = records_to_plan_rows(records, file=name, buckets=buckets)
        del records
        yield rows
        release_arrow_memory()


def plan_buckets(table: pa.Table, *, caption_inversion: bool, model_id: str, run_id: str, output_prefix: str,
                 options: StorageOptions, settings_policy: str = "stop", unknown_policy: str = "keep",
                 verify_sources: bool = True, selection: Selection | None = None) -> pa.Table:
    """One bucket (a `map_groups` group): decide it, write what it decided, return its summary row. With
    `verify_sources` the pictures of its done edits are checked (a stat or HEAD each, IDENTITY_THREADS at once)."""
    identify = (lambda uris: source_identities(uris, options)) if verify_sources else None
    plan = plan_bucket(table, caption_inversion=caption_inversion, model_id=model_id, run_id=run_id,
                       settings_policy=settings_policy, unknown_policy=unknown_policy, identify=identify,
                       selection=selection)
    summary = write_bucket_plan(plan, output_prefix, run_id, options)
    del plan, table
    release_arrow_memory()
    return pa.Table.from_pylist([summary], schema=PLAN_SUMMARY_SCHEMA)


def release_arrow_memory() -> None:
    """Hand the pages Arrow's allocator keeps for reuse back to the OS. The plan's tasks run in Ray's pool workers,
    which live on after the pass: without this each keeps the peak of the largest batch or bucket it handled, and
    the larger the manifest, the larger that peak."""
    pa.default_memory_pool().release_unused()


def plan_requests(batch: pa.Table, **kwargs) -> pa.Table:
    """`requests_to_plan_rows` as the requests stage runs it: the batch's Arrow memory handed back after."""
    rows = requests_to_plan_rows(batch, **kwargs)
    del batch
    release_arrow_memory()
    return rows


def settings_policies(on_settings_change: str | None) -> tuple[str, str]:
    """(settings policy, unknown policy) of the plan from `--on-settings-change` (None, redo or keep): without it
    a change of settings stops the run, and records from before fingerprints are kept."""
    if on_settings_change not in (None, "redo", "keep"):
        raise ValueError(f"on_settings_change must be redo, keep or None, got {on_settings_change!r}")
    return (on_settings_change or "stop", on_settings_change or "keep")


def plan_stages(config: Config, manifest: Manifest, buckets: int, output_prefix: str, run_id: str,
                with_shards: bool = False, settings: RunSettings | None = None,
                on_settings_change: str | None = None, recipe: Recipe | None = None) -> dict[str, Stage]:
    """The plan pass's stages, as declarations (their resources count in the placement check). `settings`: the
    run's settings fingerprints (default: `config`'s); `recipe`: templates, augment and regions (`build_recipe`)."""
    options = config.storage
    settings = settings or run_settings(config)
    recipe = recipe or build_recipe(config)
    settings_policy, unknown_policy = settings_policies(on_settings_change)
    plan_names = tuple(PLAN_SCHEMA.names)
    return {
        "read": Stage(name="read manifest", run=read_input_rows, reads=(), adds=_MANIFEST_ROW, cpus=0.25,
                      batch_size=1, kwargs=_read_kwargs(config, recipe, manifest), schema=None),
        # Each block the read hands on, as it comes (batch size None): fused into the read, a task per manifest
        # file (a batch size would bundle that many files into one task: `stages.spec.would_bundle_items`).
        "requests": Stage(name="requests", run=plan_requests, reads=("id", "image", "row_index"),
                          adds=plan_names, cpus=0.25, batch_size=None, schema=None,
                          kwargs=_request_kwargs(config, settings, buckets, recipe)),
        "earlier": Stage(name="earlier records", run=read_earlier_records, reads=(), adds=plan_names, cpus=0.25,
                         batch_size=_FILES_PER_TASK, schema=None,
                         kwargs={"options": options, "buckets": buckets, "with_shards": with_shards,
                                 "with_scores": config.candidates.enabled}),
        # A whole CPU, as the shuffle's reduce tasks take: Ray Data then fuses the plan into the reduce (one task a
        # bucket fetches, sorts and decides it, no hop through the object store; its release of Arrow's free pages
        # also keeps the long-lived reduce workers' heap flat): a 10^7-row re-run's plan 302 -> 251 s, its largest
        # process 389 -> 371 MiB USS.
        "plan": Stage(name="plan", run=plan_buckets, reads=plan_names, adds=(), cpus=1.0, schema=None,
                      kwargs={"caption_inversion": config.captions.caption_inversion,
                              "model_id": config.model.pretrained, "run_id": run_id,
                              "output_prefix": output_prefix, "options": options,
                              "settings_policy": settings_policy, "unknown_policy": unknown_policy,
                              "verify_sources": config.job.verify_sources,
                              "selection": Selection.of(config.candidates) if config.candidates.enabled else None}),
    }


def input_spec(manifest: Manifest) -> InputSpec:
    """How the manifest's rows are read: what `data.inputs.inspect_input` found (a Parquet manifest of URIs when it
    was inspected as one, by `inspect_manifest`)."""
    return manifest.spec or InputSpec(format="parquet", root=manifest.base_dir)


def _request_kwargs(config: Config, settings: RunSettings, buckets: int, recipe: Recipe | None = None) -> dict:
    """What `requests_to_plan_rows` takes besides the rows, in the requests stage and in the estimate of its bytes."""
    # base_dir None: the read stage resolved each relative image against its own file's folder; resolving again
    # would prefix a relative manifest folder twice
    return {"base_dir": None, "job_seed": config.job.seed, "buckets": buckets, "settings": settings.by_use,
            "caption_inversion": config.captions.caption_inversion, "recipe": recipe or build_recipe(config)}


def _read_kwargs(config: Config, recipe: Recipe, manifest: Manifest) -> dict:
    """What `read_input_rows` takes: how the input is read, the columns the recipe reads, and the column whose
    classes are ranked."""
    return {"options": config.storage, "spec": input_spec(manifest), "extra_columns": tuple(recipe.columns),
            "class_column": recipe.balance_by}


def build_recipe(config: Config, class_names: dict[str, list[str]] | None = None,
                 class_counts: dict[str, int] | None = None) -> Recipe:
    """The plan's recipe (`data.augment.Recipe`) from the config's prompts, augment and region sections, the
    manifest's ClassLabel names and the class counts of `augment.balance_by` (`count_classes`)."""
    prompts, augment = config.prompts, config.augment
    return Recipe(source_template=prompts.source, target_templates=tuple(prompts.targets),
                  per_image=augment.per_image, balance_by=augment.balance_by, per_class=augment.per_class,
                  label_column=label_column(config), boxes_from=config.region.boxes_from,
                  class_names=dict(class_names or {}), class_counts=dict(class_counts or {}))


def label_column(config: Config) -> str | None:
    """The column whose class each edit records and clip_label scores: `augment.balance_by`, else the column that
    `prompts.label_template` names."""
    return config.augment.balance_by or config.prompts.label_column


def _class_keys(batch: pa.Table, *, options: StorageOptions, column: str, spec: InputSpec | None = None):
    """(`first_row` of its file, class key) of each manifest row of the files named in `batch`: one column read
    (a WebDataset shard or an ImageFolder folder: its rows, as the plan reads them)."""
    from diffedit_batch.data.augment import class_key

    if spec is not None and spec.format != "parquet":
        for uri, first_row in zip(batch.column("file").to_pylist(), batch.column("first_row").to_pylist()):
            one = pa.table({"file": [uri], "first_row": [first_row]})
            for block in read_input_rows(one, options=options, spec=spec, extra_columns=(column,)):
                keys = [class_key(json.loads(fields).get(column) if fields else None)
                        for fields in block.column("fields").to_pylist()]
                yield pa.table({"first_row": pa.array([first_row] * len(keys), pa.int64()),
                                "class": pa.array(keys, pa.string())})
        return
    for uri, first_row in zip(batch.column("file").to_pylist(), batch.column("first_row").to_pylist()):
        filesystem, path = resolve(uri, options)
        try:
            with filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = column in parquet.schema_arrow.names  # a file of a folder may lack it: no class, then
                for record_batch in parquet.iter_batches(batch_size=65536, columns=[column] if present else []):
                    keys = ([class_key(value) for value in record_batch.column(0).to_pylist()] if present
                            else [None] * record_batch.num_rows)
                    yield pa.table({"first_row": pa.array([first_row] * len(keys), pa.int64()),
                                    "class": pa.array(keys, pa.string())})
        except (OSError, pa.ArrowException) as error:
            raise manifest_file_error(uri, error) from None


def count_classes(config: Config, manifest: Manifest, column: str) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """The rows of each class of `column` over the whole manifest (class key -> rows; null values are no class),
    and for each file (by its `first_row`) the rows of each class in the files before it. Needs Ray: a Ray Data
    group-by (file, class) counts them, so the driver holds a count per file and class, never a row."""
    import ray

    files = [file for file in manifest.files if file.rows]
    if not files:
        return {}, {}
    dataset = ray.data.from_items([{"file": file.uri, "first_row": file.first_row} for file in files],
                                  override_num_blocks=len(files))
    keys = dataset.map_batches(_class_keys, batch_format="pyarrow", batch_size=1, num_cpus=0.25,
                               fn_kwargs={"options": config.storage, "column": column,
                                          "spec": input_spec(manifest)})
    per_file: dict[int, dict[str, int]] = {}
    for row in keys.groupby(["first_row", "class"]).count().take_all():
        if row["class"] is not None:
            per_file.setdefault(int(row["first_row"]), {})[row["class"]] = int(row["count()"])
    totals: dict[str, int] = {}
    offsets: dict[int, dict[str, int]] = {}
    for file in files:
        offsets[file.first_row] = dict(totals)
        for key, rows in per_file.get(file.first_row, {}).items():
            totals[key] = totals.get(key, 0) + rows
    return totals, offsets


def label_classes(config: Config, class_names: dict[str, list[str]], class_counts: dict[str, int]) -> list[str]:
    """Every class of the label column as text, for clip_label: a ClassLabel's names, else the distinct values the
    class count found (sorted)."""
    import json

    from diffedit_batch.data.templates import class_name

    column = label_column(config)
    if column is None:
        return []
    if column in class_names:
        return list(class_names[column])
    return sorted({class_name(column, json.loads(key), {}) for key in class_counts})


def bucket_count(manifest_rows: int, earlier_records: int, plan_bytes: int = 0) -> int:
    """Buckets of a plan of `manifest_rows` rows and `earlier_records` records, `plan_bytes` (estimated Arrow bytes
    of its plan rows, `estimate_plan_bytes`) in all: ROWS_PER_BUCKET rows and BUCKET_BYTES bytes a bucket at most."""
    return max(1, math.ceil((manifest_rows + earlier_records) / ROWS_PER_BUCKET), math.ceil(plan_bytes / BUCKET_BYTES))


def plan_partitions(buckets: int) -> int:
    """The shuffle's partitions for a plan of `buckets` buckets: a bucket each, up to MAX_PARTITIONS. (Buckets are
    sized by rows and bytes, so a partition's bytes stay bounded until the manifest passes MAX_PARTITIONS buckets.)"""
    return min(buckets, MAX_PARTITIONS)


def estimate_plan_bytes(config: Config, manifest: Manifest, earlier_records: int,
                        settings: RunSettings | None = None) -> int:
    """Estimated Arrow bytes of a plan's rows: the manifest's rows at the bytes of a sample of them made into plan
    rows (SAMPLE_ROWS of each of SAMPLE_FILES files), and EARLIER_ROW_BYTES for each earlier record. Reads a few
    blocks of rows in this process; raises ManifestError naming a file that cannot be read."""
    request_kwargs = _request_kwargs(config, settings or run_settings(config), buckets=1)
    read_kwargs = _read_kwargs(config, request_kwargs["recipe"], manifest)
    files = [file for file in manifest.files if file.rows]
    spread = sorted({k * len(files) // SAMPLE_FILES for k in range(SAMPLE_FILES)})
    sampled_rows = sampled_bytes = 0
    for file in (files[index] for index in spread):
        blocks = read_input_rows(pa.table({"file": [file.uri], "first_row": [file.first_row]}),
                                 rows_per_block=SAMPLE_ROWS, **read_kwargs)
        try:
            rows = next(blocks, None)
        finally:
            blocks.close()
        if rows is None or not rows.num_rows:
            continue
        plan_rows = requests_to_plan_rows(rows, **request_kwargs)
        sampled_rows += rows.num_rows
        sampled_bytes += plan_rows.nbytes
    per_row = sampled_bytes / sampled_rows if sampled_rows else 0
    return math.ceil(manifest.rows * per_row) + earlier_records * EARLIER_ROW_BYTES


def plan_run(config: Config, manifest: Manifest, earlier: list[RecordFile], output_prefix: str,
             run_id: str, with_shards: bool = False, settings: RunSettings | None = None,
             on_settings_change: str | None = None, class_names: dict[str, list[str]] | None = None) -> RunPlan:
    """Run the plan pass (needs Ray): returns the summed plan; its files are under `PREFIX/_work/<run_id>/`, its
    record parts under `PREFIX/manifest/` (`RunPlan.record_files`). `with_shards`: the output holds shards, and the
    plan reports which of them earlier records name. `on_settings_change` (None, redo, keep): `settings_policies`.
    `class_names`: the manifest's ClassLabel names (column -> names), for templates and classes."""
    import ray

    earlier = [file for file in earlier if file.rows]
    files = [file for file in manifest.files if file.rows]
    plan = RunPlan()
    if not files:
        return plan  # nothing to edit; earlier records stay as they are
    class_names = class_names or {}
    column = label_column(config)
    # balance needs every class's rows; clip_label needs every class's name (a ClassLabel's names give them)
    counted = config.augment.balance_by or (
        column if "clip_label" in config.candidates.scores_used and column not in class_names else None)
    class_counts, class_offsets = count_classes(config, manifest, counted) if counted else ({}, {})
    recipe = build_recipe(config, class_names, class_counts)
    plan.classes = label_classes(config, class_names, class_counts)
    earlier_records = sum(file.rows for file in earlier)
    settings = settings or run_settings(config)
    size = estimate_plan_bytes(config, manifest, earlier_records, settings)
    buckets = bucket_count(manifest.rows, earlier_records, size)
    partitions = plan_partitions(buckets)
    stages = plan_stages(config, manifest, buckets, output_prefix, run_id, with_shards, settings, on_settings_change,
                         recipe)
    # A block per manifest file, and per group of record files: each is read by a task of its own, in parallel.
    requests = apply(
        ray.data.from_items([{"file": file.uri, "first_row": file.first_row,
                              "class_offsets": json.dumps(class_offsets.get(file.first_row, {}))} for file in files],
                            override_num_blocks=len(files)),
        [stages["read"], stages["requests"]],
    )
    if earlier:
        records = apply(
            ray.data.from_items([{"uri": file.uri, "size": file.size, "name": file.name} for file in earlier],
                                override_num_blocks=math.ceil(len(earlier) / _FILES_PER_TASK)),
            [stages["earlier"]],
        )
        requests = requests.union(records)
    decide = stages["plan"]
    choose_shuffle(requests, partitions)
    # the sort shuffle of a small plan is not fused into its plan tasks (see "plan" in plan_stages): half a CPU each
    cpus = decide.cpus if partitions > SMALL_PLAN_BUCKETS else decide.cpus / 2
    summaries = requests.groupby("bucket", num_partitions=partitions).map_groups(
        decide.run, batch_format="pyarrow", fn_kwargs=decide.kwargs, num_cpus=cpus,
    ).take_all()
    for summary in sorted(summaries, key=lambda row: row["bucket"]):
        plan.add(summary)
    plan.buckets, plan.partitions, plan.estimated_bytes = buckets, partitions, size
    return plan


def choose_shuffle(dataset, partitions: int) -> None:
    """Set Ray Data's shuffle for a group-by into `partitions` partitions, on this dataset only: the sort shuffle up
    to SMALL_PLAN_BUCKETS, the disk-based hash shuffle above (see there); and the pass's block size and object-store
    budget (PLAN_STORE_BYTES)."""
    from ray.data.context import ShuffleStrategy

    from ray.data import ExecutionResources

    context = dataset.context
    context.target_max_block_size = PLAN_BLOCK_BYTES
    context.execution_options.resource_limits = ExecutionResources.for_limits(object_store_memory=PLAN_STORE_BYTES)
    if partitions <= SMALL_PLAN_BUCKETS:
        context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    else:
        context.shuffle_strategy = ShuffleStrategy.SHUFFLE_V2
        context.use_disk_based_hash_shuffle = True
        context.shuffle_input_batch_bytes = SHUFFLE_INPUT_BYTES
