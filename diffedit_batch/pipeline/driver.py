"""Running the job: check the manifest, connect to Ray, stream the plan, summarise, write the run files."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from diffedit_batch.config import Config
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.manifest import manifest_base_dir, manifest_files, read_manifest_schema
from diffedit_batch.data.manifest_scan import scan_manifest_needs
from diffedit_batch.data.run_metadata import write_run_metadata
from diffedit_batch.data.storage import redact_uri, write_bytes_atomic

from .connection import connect
from .placement import check_placement
from .plan import JobPaths, build_dataset, generate_concept_captions
from .progress import ProgressReporter
from .registry import EditRegistry
from .summary import JobSummary

log = logging.getLogger("diffedit_batch.job")


def run_job(config: Config, manifest_uri: str, output_prefix: str, address: str | None = None) -> JobSummary:
    """Edit every row of the manifest at `manifest_uri`, writing under `output_prefix`.

    Raises ManifestError before any work when the manifest's schema is wrong; row failures become records.
    Re-running on the same output skips edits recorded ok and retries the rest.
    """
    options = config.storage
    files = manifest_files(manifest_uri, options)
    schema = read_manifest_schema(manifest_uri, options)
    paths = JobPaths(files, manifest_base_dir(manifest_uri, options), output_prefix.rstrip("/"))
    elastic = connect(address)
    # The recipe stages the manifest needs (none in noop mode: the data-path benchmark runs no model at all).
    needs = None if config.job.mode == "noop" else scan_manifest_needs(paths.manifest_files, schema.names, options)
    caption_images = needs is not None and (config.captions.caption_inversion or needs.rows_without_source > 0)
    check_placement(config, caption_images, elastic)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    registry = ray.remote(num_cpus=0)(EditRegistry).remote(paths.output_prefix, options)
    retried = set(ray.get(registry.previously_recorded_not_ok.remote()))
    summary = JobSummary(run_id=run_id)
    metadata = {"run_id": run_id, "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "manifest": redact_uri(manifest_uri), "config": config.to_dict()}
    write_run_metadata(paths.output_prefix, metadata, options)
    log.info("run %s: %d manifest file(s) from %s -> %s", run_id, len(files), redact_uri(manifest_uri),
             redact_uri(output_prefix))

    rerecorded: list[str] = []
    started = time.perf_counter()
    try:
        with ProgressReporter(summary, config.job.progress_interval_s):
            concept_captions = _concept_captions(config, needs.concepts if needs else [], paths, run_id)
            dataset = build_dataset(
                config, paths, schema.names, registry, run_id,
                concept_captions=concept_captions, caption_images=caption_images,
            )
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                summary.tally(batch, retried, rerecorded)
            summary.skipped = ray.get(registry.skipped_count.remote())
            ray.get(registry.drop_superseded.remote(rerecorded, paths.output_prefix, options))
    finally:
        summary.seconds = time.perf_counter() - started
        ray.kill(registry)
    metadata.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), seconds=summary.seconds, ok=summary.ok,
                    failed=summary.failed, duplicates=summary.duplicates, skipped=summary.skipped)
    write_run_metadata(paths.output_prefix, metadata, options)
    return summary


def _concept_captions(config: Config, concepts: list[str], paths: JobPaths, run_id: str) -> dict:
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
        uri = OutputLayout(paths.output_prefix).concepts_file(run_id)
        write_bytes_atomic(uri, sink.getvalue().to_pybytes(), config.storage)
        log.info("generated captions for %d concept(s)", len(concept_captions))
    return concept_captions
