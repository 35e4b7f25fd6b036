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
import pyarrow.parquet as pq
import ray

from diffedit_batch.config import Config
from diffedit_batch.data.manifest import manifest_base_dir, manifest_files, read_manifest_schema
from diffedit_batch.data.manifest_scan import scan_manifest_needs
from diffedit_batch.data.storage import join, redact_uri, write_bytes_atomic

from .plan import JobPaths, build_dataset, generate_concept_captions, storage_options
from .registry import EditRegistry

log = logging.getLogger("diffedit_batch.job")


@dataclass
class JobSummary:
    run_id: str
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error_classes: Counter = field(default_factory=Counter)

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
        return (
            f"edits ok {self.ok}, failed {self.failed}, duplicates {self.duplicates}, skipped {self.skipped} "
            f"(done earlier); {self.edits_per_second:.3f} edits/s over {self.seconds:.1f} s"
            + (f"; errors by class: {classes}" if classes else "")
        )


def connect(address: str | None = None) -> None:
    """Join the cluster at `address` or RAY_ADDRESS; with neither, start Ray in-process."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)


def run_job(config: Config, manifest_uri: str, output_prefix: str, address: str | None = None) -> JobSummary:
    """Edit every row of the manifest at `manifest_uri`, writing under `output_prefix`.

    Raises ManifestError before any work when the manifest's schema is wrong; row failures become records.
    Re-running on the same output skips edits recorded ok and retries the rest.
    """
    options = storage_options(config)
    files = manifest_files(manifest_uri, options)
    schema = read_manifest_schema(manifest_uri, options)
    paths = JobPaths(files, manifest_base_dir(manifest_uri, options), output_prefix.rstrip("/"))
    connect(address)
    _check_resources(config)
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
        concept_captions, caption_images = _prepare_recipe(config, paths, schema.names, run_id, options)
        dataset = build_dataset(
            config, paths, schema.names, registry, run_id,
            concept_captions=concept_captions, caption_images=caption_images,
        )
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
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
    finally:
        stop.set()
        summary.seconds = time.perf_counter() - started
    summary.skipped = ray.get(registry.skipped_count.remote())
    ray.get(registry.drop_superseded.remote(rerecorded, paths.output_prefix, options))
    ray.kill(registry)
    metadata.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), seconds=summary.seconds, ok=summary.ok,
                    failed=summary.failed, duplicates=summary.duplicates, skipped=summary.skipped)
    _write_run_metadata(paths.output_prefix, metadata, options)
    return summary


def _prepare_recipe(config: Config, paths: JobPaths, schema_names, run_id: str, options):
    """Which recipe stages the manifest needs: concept captions (made now, once per distinct concept of the
    job, and kept in PREFIX/concepts/<run_id>.parquet for audit) and whether BLIP must caption images."""
    if config.job.mode == "noop":
        return {}, False  # the data-path benchmark runs no model at all
    needs = scan_manifest_needs(paths.manifest_files, schema_names, options)
    concept_captions = generate_concept_captions(config, needs.concepts)
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
    caption_images = config.captions.caption_inversion or needs.rows_without_source > 0
    return concept_captions, caption_images


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


def _check_resources(config: Config) -> None:
    """Fail fast when edit actors could never be placed on a fixed local cluster."""
    if config.job.gpus_per_actor <= 0:
        return
    total_gpus = ray.cluster_resources().get("GPU", 0)
    if total_gpus == 0:
        message = (
            f"job.gpus_per_actor is {config.job.gpus_per_actor} but the Ray cluster has no GPUs; "
            "set job.gpus_per_actor=0 to edit on CPUs"
        )
        if os.environ.get("RAY_ADDRESS") is None:
            raise RuntimeError(message)
        log.warning("%s (waiting for an autoscaler to add GPU nodes)", message)
