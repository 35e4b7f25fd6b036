"""Running the job: connect to Ray (or start it in-process), check the manifest, stream, summarise."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from diffedit_batch.config import Config
from diffedit_batch.data.manifest import manifest_base_dir, manifest_files, read_manifest_schema
from diffedit_batch.data.manifest_scan import scan_manifest_needs
from diffedit_batch.data.storage import join, redact_uri, write_bytes_atomic

from .plan import JobPaths, build_dataset, generate_concept_captions, storage_options
from .registry import EditRegistry

log = logging.getLogger("diffedit_batch.job")


class JobSetupError(RuntimeError):
    """The job cannot run as configured on this cluster (raised before any edit)."""


@dataclass
class JobSummary:
    run_id: str
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error_classes: Counter = field(default_factory=Counter)
    actor_busy_s: float = 0.0  # summed over edit actors: editing
    actor_wait_s: float = 0.0  # summed over edit actors: waiting for the next batch after the first

    @property
    def actor_busy_fraction(self) -> float | None:
        total = self.actor_busy_s + self.actor_wait_s
        return self.actor_busy_s / total if total > 0 else None

    @property
    def attempted(self) -> int:
        return self.ok + self.failed + self.duplicates

    @property
    def failed_fraction(self) -> float:
        return (self.failed + self.duplicates) / self.attempted if self.attempted else 0.0

    @property
    def edits_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        classes = ", ".join(f"{name}: {count}" for name, count in self.error_classes.most_common(8))
        busy = self.actor_busy_fraction
        return (
            f"edits ok {self.ok}, failed {self.failed}, duplicates {self.duplicates}, skipped {self.skipped} "
            f"(done earlier); {self.edits_per_second:.3f} edits/s over {self.seconds:.1f} s"
            + (f"; edit actors busy {busy:.0%} of the time after start-up" if busy is not None else "")
            + (f"; errors by class: {classes}" if classes else "")
        )


def connect(address: str | None = None) -> bool:
    """Join the cluster at `address` or RAY_ADDRESS; with neither, start Ray in-process.

    Returns True when the job runs on a cluster it joined (which an autoscaler may grow).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    return address is not None


def run_job(config: Config, manifest_uri: str, output_prefix: str, address: str | None = None) -> JobSummary:
    """Edit every row of the manifest at `manifest_uri`, writing under `output_prefix`.

    Raises ManifestError before any work when the manifest's schema is wrong; row failures become records.
    Re-running on the same output skips edits recorded ok and retries the rest.
    """
    options = storage_options(config)
    files = manifest_files(manifest_uri, options)
    schema = read_manifest_schema(manifest_uri, options)
    paths = JobPaths(files, manifest_base_dir(manifest_uri, options), output_prefix.rstrip("/"))
    elastic = connect(address)
    # The recipe stages the manifest needs (none in noop mode: the data-path benchmark runs no model at all).
    needs = None if config.job.mode == "noop" else scan_manifest_needs(paths.manifest_files, schema.names, options)
    caption_images = needs is not None and (config.captions.caption_inversion or needs.rows_without_source > 0)
    _check_resources(config, caption_images, elastic)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    registry = ray.remote(num_cpus=0)(EditRegistry).remote(paths.output_prefix, options)
    retried = set(ray.get(registry.previously_recorded_not_ok.remote()))
    summary = JobSummary(run_id=run_id)
    metadata = {"run_id": run_id, "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "manifest": redact_uri(manifest_uri), "config": config.to_dict()}
    _write_run_metadata(paths.output_prefix, metadata, options)
    log.info("run %s: %d manifest file(s) from %s -> %s", run_id, len(files), redact_uri(manifest_uri),
             redact_uri(output_prefix))

    rerecorded: list[str] = []
    started = time.perf_counter()
    stop = threading.Event()
    reporter = threading.Thread(
        target=_report_progress, args=(summary, started, config.job.progress_interval_s, stop), daemon=True
    )
    reporter.start()
    try:
        concept_captions = _concept_captions(config, needs.concepts if needs else [], paths, run_id, options)
        dataset = build_dataset(
            config, paths, schema.names, registry, run_id,
            concept_captions=concept_captions, caption_images=caption_images,
        )
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            _tally(batch, summary, retried, rerecorded)
        summary.skipped = ray.get(registry.skipped_count.remote())
        ray.get(registry.drop_superseded.remote(rerecorded, paths.output_prefix, options))
    finally:
        stop.set()
        summary.seconds = time.perf_counter() - started
        ray.kill(registry)
    metadata.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), seconds=summary.seconds, ok=summary.ok,
                    failed=summary.failed, duplicates=summary.duplicates, skipped=summary.skipped)
    _write_run_metadata(paths.output_prefix, metadata, options)
    return summary


def _tally(batch: pa.Table, summary: JobSummary, retried: set[str], rerecorded: list[str]) -> None:
    """Count one block of the write stage's summary rows."""
    summary.actor_busy_s += pc.sum(batch["edit_s"]).as_py() or 0.0
    summary.actor_wait_s += pc.sum(batch["actor_wait_s"]).as_py() or 0.0
    for edit_id, status, error_class, recorded in zip(
        batch["edit_id"].to_pylist(), batch["status"].to_pylist(), batch["error_class"].to_pylist(),
        batch["recorded"].to_pylist(),
    ):
        if status != "duplicate" and recorded is not False and edit_id in retried:
            rerecorded.append(edit_id)  # this run's record replaces the earlier non-ok one
        if status == "ok":
            summary.ok += 1
        elif status == "duplicate":
            summary.duplicates += 1
            summary.error_classes["duplicate_id"] += 1
        else:
            summary.failed += 1
            summary.error_classes[error_class or "unknown"] += 1


def _concept_captions(config: Config, concepts: list[str], paths: JobPaths, run_id: str, options) -> dict:
    """Flan-T5 captions of the job's concepts, made once per distinct concept before the edits, and kept in
    PREFIX/concepts/<run_id>.parquet for audit."""
    concept_captions = generate_concept_captions(config, concepts)
    if concept_captions:
        concepts = config.concepts
        table = pa.table({
            "concept": list(concept_captions),
            "captions": list(concept_captions.values()),
            "model_id": [concepts.model] * len(concept_captions),
            "seed": [concepts.seed] * len(concept_captions),
            "instruction": [concepts.instruction] * len(concept_captions),
            "temperature": [concepts.temperature] * len(concept_captions),
            "top_k": [concepts.top_k] * len(concept_captions),
            "run_id": [run_id] * len(concept_captions),
        })
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomic(join(paths.output_prefix, "concepts", f"{run_id}.parquet"), sink.getvalue().to_pybytes(), options)
        log.info("generated captions for %d concept(s)", len(concept_captions))
    return concept_captions


def _write_run_metadata(prefix: str, metadata: dict, options) -> None:
    """`PREFIX/runs/<run_id>.json`: the run's config at its start, its counts at its end (read by the report)."""
    uri = join(prefix, "runs", f"{metadata['run_id']}.json")
    write_bytes_atomic(uri, json.dumps(metadata, indent=1).encode(), options)


def _report_progress(summary: JobSummary, started: float, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        elapsed = time.perf_counter() - started
        log.info(
            "progress: %d ok, %d failed, %d duplicates, %.3f edits/s after %.0f s",
            summary.ok, summary.failed, summary.duplicates, summary.ok / elapsed if elapsed else 0.0, elapsed,
        )


def _check_resources(config: Config, caption_images: bool, elastic: bool) -> None:
    """Fail fast when the stages could never all be placed, instead of waiting forever.

    Actor pools hold their CPUs and GPUs for the whole run; the fetch and write tasks need what is left. On a
    cluster we joined (`elastic`), an autoscaler may still add nodes, so this only warns there.
    """
    resources = ray.cluster_resources()
    problems = []
    if config.job.gpus_per_actor > 0 and resources.get("GPU", 0) == 0:
        problems.append(
            f"job.gpus_per_actor is {config.job.gpus_per_actor} but the Ray cluster has no GPUs; "
            "set job.gpus_per_actor=0 to edit on CPUs"
        )
    held = config.job.cpus_per_actor * config.job.num_actors
    if caption_images:
        held += config.captions.cpus
    if config.metrics.clip_model is not None:
        held += config.metrics.clip_cpus_per_actor * config.metrics.clip_num_actors
    task_cpus = max(config.job.decode_cpus, config.job.write_cpus)
    total_cpus = resources.get("CPU", 0)
    if held + task_cpus > total_cpus:
        problems.append(
            f"the actor pools hold {held:g} CPUs and each fetch/write task needs {task_cpus:g}, but the Ray "
            f"cluster has {total_cpus:g}; lower job.cpus_per_actor (or captions.cpus, metrics.clip_cpus_per_actor, "
            "job.decode_cpus, job.write_cpus), or add CPUs"
        )
    for message in problems:
        if not elastic:
            raise JobSetupError(message)
        log.warning("%s (waiting for an autoscaler to add nodes)", message)
