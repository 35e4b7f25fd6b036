"""The job's stages as plain callables over Arrow batches. Ray runs them; they do not import Ray.

expand   manifest rows -> edit requests: validated, seeded, deduplicated, done ones dropped (CPU task)
fetch    read, decode and resize each picture (CPU task)
edit     DiffEdit on a batch (actor: holds one DiffEditEngine, one GPU where there are GPUs)
write    PNGs of the edit and the mask, then the block's result records (CPU task)

A row's failure never raises out of a stage: it becomes an error row, and later stages pass it through.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from diffedit_batch.data.images import (
    ImageDecodeError,
    decode_image,
    encode_png,
    fit_to_resolution,
    mask_coverage,
    mask_to_png,
    restore_size,
)
from diffedit_batch.data.manifest import EditRequest, derive_seed, expand_edits, validate_request
from diffedit_batch.data.metrics import METRIC_FIELDS, background_metrics
from diffedit_batch.data.records import extend_result_schema, image_output_uri, mask_output_uri, write_record_part
from diffedit_batch.data.storage import (
    StorageError,
    StorageOptions,
    read_bytes,
    redact_uri,
    resolve,
    write_bytes_atomic,
)

from .registry import DONE, DUPLICATE
from .rows import PENDING, SUMMARY_SCHEMA, failed, to_table

log = logging.getLogger(__name__)

RECORD_SCHEMA = extend_result_schema(*METRIC_FIELDS)  # the result records this job writes


def _error_text(error: BaseException, limit: int = 500) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- read


def read_manifest_rows(batch: pa.Table, *, options: StorageOptions, columns: list[str], rows_per_block: int = 1024):
    """Stream the manifest files named in `batch` as blocks of rows, one Parquet record batch at a time."""
    import pyarrow.parquet as pq

    for uri in batch.column("file").to_pylist():
        filesystem, path = resolve(uri, options)
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [name for name in columns if name in parquet.schema_arrow.names]
            for record_batch in parquet.iter_batches(batch_size=rows_per_block, columns=present):
                yield pa.Table.from_batches([record_batch])


# ---------------------------------------------------------------------------------------------- expand


def expand_requests(
    batch: pa.Table, *, registry, base_dir: str, job_seed: int, caption_available: bool = False
) -> pa.Table:
    """Manifest rows -> one row per edit. Invalid rows become error rows; done ones are dropped."""
    requests: list[EditRequest] = []
    for row in batch.to_pylist():
        requests.extend(expand_edits(row, base_dir=base_dir))
    claims = _claim(registry, [request.edit_id for request in requests])
    out = []
    for request, claim in zip(requests, claims):
        if claim == DONE:
            continue
        row = request.to_dict()
        row["status"] = PENDING
        if claim == DUPLICATE:
            out.append(failed(row, "duplicate_id", f"duplicate id {request.edit_id!r}: an earlier row with it is edited"))
            out[-1]["status"] = "duplicate"
            continue
        problem = validate_request(request, caption_available=caption_available)
        if problem is not None:
            out.append(failed(row, "invalid_row", problem))
            continue
        if row["seed"] is None:
            row["seed"] = derive_seed(job_seed, request.row_id)
        elif not 0 <= row["seed"] < 2**63:
            out.append(failed(row, "invalid_row", f"seed must be in [0, 2**63), got {row['seed']}"))
            continue
        out.append(row)
    return to_table(_safe_for_arrow(out))


def _claim(registry, edit_ids: list[str | None]) -> list[str]:
    """Ask the registry (a Ray actor handle, or a plain object in tests)."""
    claim = registry.claim
    if hasattr(claim, "remote"):
        import ray  # the handle came from the pipeline layer; resolving it needs Ray

        return ray.get(claim.remote(edit_ids))
    return claim(edit_ids)


def _safe_for_arrow(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mistyped values (already recorded as errors) are stringified so the row still fits the schema."""
    for row in rows:
        for name in ("source_prompt", "target_prompt", "inversion_prompt", "source_concept", "target_concept"):
            if row.get(name) is not None and not isinstance(row[name], str):
                row[name] = repr(row[name])[:200]
        if row.get("seed") is not None and not isinstance(row["seed"], int):
            row["seed"] = None
    return rows


# ---------------------------------------------------------------------------------------------- fetch


def fetch_images(batch: pa.Table, *, options: StorageOptions, resolution: int, max_pixels: int) -> pa.Table:
    """Read and decode each pending row's picture (RGB, EXIF orientation applied), resize it for the model."""
    out = []
    for row in batch.to_pylist():
        if row["status"] == PENDING:
            row = _fetch_one(row, options, resolution, max_pixels)
        out.append(row)
    return to_table(out)


def _fetch_one(row: dict, options: StorageOptions, resolution: int, max_pixels: int) -> dict:
    started = time.perf_counter()
    try:
        data = read_bytes(row["image_uri"], options)
    except StorageError as error:
        return failed(row, "storage", f"cannot read image: {error}")
    except (OSError, ValueError) as error:
        return failed(row, "storage", f"cannot read image {redact_uri(row['image_uri'])}: {_error_text(error)}")
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return failed(row, "image_decode", str(error))
    model_input = fit_to_resolution(image, resolution)
    row.update(
        orig_width=image.width,
        orig_height=image.height,
        width=model_input.width,
        height=model_input.height,
        pixels=model_input.tobytes(),
        fetch_s=time.perf_counter() - started,
    )
    return row


# ---------------------------------------------------------------------------------------------- edit


class EditStage:
    """Holds one DiffEditEngine per actor (loaded once) and edits each batch of pending rows.

    `mode="noop"` skips diffusion and returns the input as the edit with an empty mask: the whole data path
    runs, for data-path benchmarks. A batch that fails as a whole is retried row by row, so one bad row
    cannot fail its neighbours.
    """

    def __init__(self, model_config, edit_settings, mode: str = "edit", concept_captions: dict | None = None):
        self.settings = edit_settings
        self.mode = mode
        self.concept_captions = concept_captions or {}  # concept -> its Flan-T5 captions
        self.concept_embeddings: dict = {}
        self.engine = None
        if mode == "edit":
            from diffedit_batch.engine import DiffEditEngine

            self.engine = DiffEditEngine.from_pretrained(
                model_config.pretrained,
                device=model_config.device,
                dtype=model_config.dtype,
                revision=model_config.revision,
                max_unet_batch=model_config.max_unet_batch,
                compile_unet=model_config.compile_unet,
                channels_last=None if model_config.channels_last else False,  # None: on for CUDA only
                vae_slicing=model_config.vae_slicing,
                vae_tiling=model_config.vae_tiling,
            )
        self.latent_cell = self.engine.vae_scale_factor if self.engine is not None else 8
        self.busy_s = 0.0  # seconds spent editing, for the busy fraction
        self.last_batch_end: float | None = None
        self.node_id = _ray_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        pending = [i for i, row in enumerate(rows) if row["status"] == PENDING]
        if pending:
            started = time.perf_counter()
            # Idle time between batches is the data path starving the actor (the first wait is model start-up).
            waited = started - self.last_batch_end if self.last_batch_end is not None else 0.0
            self._edit_rows([rows[i] for i in pending])
            for i in pending:
                rows[i]["node_id"] = self.node_id
                rows[i]["actor_wait_s"] = waited / len(pending)
            self.last_batch_end = time.perf_counter()
            self.busy_s += self.last_batch_end - started
        return to_table(rows)

    def _edit_rows(self, rows: list[dict]) -> None:
        started = time.perf_counter()
        try:
            results = self._run(rows)
        except Exception:  # noqa: BLE001 - isolate the row that broke the batch
            if len(rows) == 1:
                rows[0].update(failed(rows[0], "engine", _error_text_from_current()))
                return
            for row in rows:
                self._edit_rows([row])
            return
        seconds = (time.perf_counter() - started) / len(rows)
        for row, (edited, mask, truncated) in zip(rows, results):
            row.update(
                edited=edited.tobytes(),
                mask=np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
                mask_height=mask.shape[0],
                mask_width=mask.shape[1],
                mask_coverage=mask_coverage(mask),
                prompt_truncated=truncated,
                edit_s=seconds,
            )

    def _run(self, rows: list[dict]) -> list[tuple[Image.Image, np.ndarray, bool]]:
        images = [Image.frombytes("RGB", (row["width"], row["height"]), row["pixels"]) for row in rows]
        if self.engine is None:
            cell = self.latent_cell
            return [(image, np.zeros((image.height // cell, image.width // cell), np.uint8), False) for image in images]
        results = self.engine.edit(
            images,
            [self._prompt(row, "source") for row in rows],
            [self._prompt(row, "target") for row in rows],
            [row["seed"] for row in rows],
            settings=self.settings,
            inversion_prompts=[row["inversion_prompt"] for row in rows],
        )
        return [(result.image, result.mask, bool(result.truncated_prompts)) for result in results]


    def _prompt(self, row: dict, side: str):
        """The row's prompt, else the mean embedding of its concept's captions (computed once per concept)."""
        if row[f"{side}_prompt"] is not None:
            return row[f"{side}_prompt"]
        concept = row[f"{side}_concept"]
        if concept not in self.concept_captions:
            raise ValueError(f"no captions were generated for {side} concept {concept!r}")
        if concept not in self.concept_embeddings:
            from diffedit_batch.engine.concepts import concept_embedding

            self.concept_embeddings[concept] = concept_embedding(self.engine, self.concept_captions[concept])
        return self.concept_embeddings[concept]


def _ray_node_id() -> str | None:
    """The Ray node this process runs on (hex), or None outside Ray: the stage also runs without it."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - provenance only; never fail an edit over it
        return None


def _error_text_from_current() -> str:
    lines = traceback.format_exc(limit=1).strip().splitlines()
    return lines[-1][:500] if lines else "engine failed"


# ---------------------------------------------------------------------------------------------- write


def write_outputs(
    batch: pa.Table, *, output_prefix: str, options: StorageOptions, model_id: str, run_id: str,
    background_metrics: bool = True,
) -> pa.Table:
    """Write each edited row's PNGs, then the block's records (so no record points at a missing file).

    With ``background_metrics``, each edit's background PSNR/SSIM (diffedit_batch.data.metrics) is computed
    from the model-resolution input and edit, the last stage that holds both.
    """
    records = []
    summary = []
    for row in batch.to_pylist():
        if row["status"] == PENDING:
            row = _write_one(row, output_prefix, options, background_metrics)
        records.append(_record(row, model_id, run_id))
        summary.append({"edit_id": row["edit_id"], "status": records[-1]["status"],
                        "error_class": row.get("error_class"), "edit_s": row.get("edit_s"),
                        "actor_wait_s": row.get("actor_wait_s"),
                        "recorded": True})
    if records:
        try:
            write_record_part(output_prefix, records, options, part_name=_part_name(run_id, records),
                              schema=RECORD_SCHEMA)
        except StorageError as error:
            # Not a crash: the block's rows count as storage errors and, having no record, are retried by a re-run.
            log.warning("cannot write the records of %d edits: %s", len(records), error)
            for row in summary:
                row.update(status="error", error_class="storage", recorded=False)
    return to_table(summary, SUMMARY_SCHEMA)


def _write_one(row: dict, output_prefix: str, options: StorageOptions, with_metrics: bool = True) -> dict:
    started = time.perf_counter()
    size = (row["orig_width"], row["orig_height"])
    model_edit = Image.frombytes("RGB", (row["width"], row["height"]), row["edited"])
    edited = restore_size(model_edit, size)
    mask = np.frombuffer(row["mask"], np.uint8).reshape(row["mask_height"], row["mask_width"])
    if with_metrics and row.get("pixels"):
        model_input = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
        try:
            psnr, ssim = background_metrics(model_input, np.asarray(model_edit), mask)
            row.update(background_psnr=psnr, background_ssim=ssim)
        except ValueError as error:  # a metric must not fail a finished edit: it stays null
            log.warning("no background metrics for %r: %s", row["edit_id"], error)
    row["pixels"] = None
    image_uri = image_output_uri(output_prefix, row["edit_id"])
    mask_uri = mask_output_uri(output_prefix, row["edit_id"])
    try:
        write_bytes_atomic(image_uri, encode_png(edited), options)
        write_bytes_atomic(mask_uri, mask_to_png(mask, size), options)
    except StorageError as error:
        return failed(row, "storage", f"cannot write outputs: {error}")
    return {**row, "status": "ok", "output_image_uri": image_uri, "output_mask_uri": mask_uri,
            "write_s": time.perf_counter() - started}


def _record(row: dict, model_id: str, run_id: str) -> dict:
    ok = row["status"] == "ok"
    return {
        "id": row["edit_id"],
        "row_id": row["row_id"],
        "status": row["status"],
        "error": row.get("error"),
        "error_class": row.get("error_class"),
        "image_uri": row.get("output_image_uri") if ok else None,
        "mask_uri": row.get("output_mask_uri") if ok else None,
        "source_image_uri": row.get("image_uri"),
        "source_prompt": row.get("source_prompt"),
        "target_prompt": row.get("target_prompt"),
        "inversion_prompt": row.get("inversion_prompt"),
        "source_concept": row.get("source_concept"),
        "target_concept": row.get("target_concept"),
        "caption": row.get("caption"),
        "prompt_truncated": row.get("prompt_truncated"),
        "seed": row.get("seed"),
        "mask_coverage": row.get("mask_coverage") if ok else None,
        **{f.name: row.get(f.name) if ok else None for f in METRIC_FIELDS},
        "model_id": model_id,
        "width": row.get("orig_width"),
        "height": row.get("orig_height"),
        "fetch_s": row.get("fetch_s"),
        "edit_s": row.get("edit_s"),
        "write_s": row.get("write_s"),
        "run_id": run_id,
        "node_id": row.get("node_id"),
    }


def _part_name(run_id: str, records: list[dict]) -> str:
    """Deterministic per block: a retried write task replaces its own part instead of adding a second."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(repr((record["id"], record["row_id"], record["status"])).encode("utf-8", "surrogatepass"))
    return f"{run_id}-{digest.hexdigest()}"
