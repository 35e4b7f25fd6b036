"""Edit: an actor that holds one DiffEditEngine (loaded once) and edits each block of pending rows.

An actor takes a whole block (a slice of the work list, up to Ray Data's block size) and groups it itself: rows of
one model-input shape go together, a picture's targets stay in one engine call (they share its encode and
inversion), and each engine call holds at most `job.batch_size` rows. Rows of one shape then fill the UNet's
batches; with aspect buckets (`model.aspect_buckets`) most rows of a block share a few shapes. With candidates
(`candidates.count` > 1) each request becomes its candidates here, edited in one engine call with a settings object
per row, then scored and selected (`stages.candidates`).
"""

from __future__ import annotations

import json
import time
import traceback
from collections import defaultdict

import numpy as np
import pyarrow as pa
from PIL import Image

from diffedit_batch.config import Config
from diffedit_batch.data.images import mask_coverage
from diffedit_batch.data.manifest import nothing_to_edit
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.recipe.candidates import CLIP_SCORES

from diffedit_batch.data.regions import final_mask, latent_constraint, unpack

from ..rows import PAYLOADS, failed, require, to_table
from .candidates import LabelTexts, expand_candidates, score_and_select
from .spec import Stage, quiet_model_loading

READS = ("status", "edit_id", "source_image_uri", "row_index", "model_width", "model_height", "pixels",
         "source_prompt", "target_prompt", "source_concept", "target_concept", "inversion_prompt", "seed",
         "width", "height", "region", "class_name")
ADDS = ("edited", "mask", "mask_width", "mask_height", "mask_coverage", "prompt_truncated", "edit_s", "actor_wait_s",
        "node_id", "status", "error", "error_class", "engine_counts",
        # candidates (and single edits held to floors): one row per candidate, its scores and its fate
        "edit_id", "seed", "candidate", "candidate_settings", "filter_reason", "background_psnr", "background_ssim",
        "clip_directional", "clip_image", "clip_target_score", "clip_source_score", "clip_label")

NOTHING_LEFT = "nothing left to edit: the final mask is empty"


NON_FINITE_EDIT = ("the edit came out NaN/Inf (numeric overflow, e.g. float16): no picture was made; set "
                   "model.dtype=float32 (or bfloat16), or use a VAE that is stable in float16, and run again")


def engine_calls(rows: list[dict], batch_size: int) -> list[list[dict]]:
    """The engine calls of a block: rows grouped by model-input shape; whole manifest rows (a picture's targets)
    packed in order into calls of at most `batch_size` rows (a row with more targets than that is a call of its
    own)."""
    by_shape: dict[tuple, list[list[dict]]] = defaultdict(list)
    for row in rows:
        pictures = by_shape[(row["model_width"], row["model_height"])]
        if pictures and pictures[-1][0]["row_index"] == row["row_index"] and row["row_index"] is not None:
            pictures[-1].append(row)
        else:
            pictures.append([row])
    calls = []
    for pictures in by_shape.values():
        call: list[dict] = []
        for picture in pictures:
            if call and len(call) + len(picture) > batch_size:
                calls.append(call)
                call = []
            call.extend(picture)
        if call:
            calls.append(call)
    return calls


class EditStage:
    """Ray Data callable class: `__init__` loads the engine once per actor, `__call__` edits a batch.

    `mode="noop"` skips diffusion and returns the input as the edit with an empty mask: the whole data path
    runs, for data-path benchmarks. A batch that fails as a whole is retried row by row, so one bad row cannot
    fail its neighbours. `engine` replaces the engine the model config would load (tests pass a stand-in).
    """

    def __init__(self, model_config, edit_settings, mode: str = "edit", concept_captions: dict | None = None,
                 engine=None, batch_size: int = 8, candidates=None, clip_model: str | None = None,
                 clip_device: str = "auto", scorer=None, label_template: str | None = None,
                 label_classes: list[str] | None = None):
        self.settings = edit_settings
        # Candidates (`candidates.count` > 1): drawn, edited in one call per request, scored and selected here.
        self.candidates = candidates if candidates is not None and candidates.enabled else None
        # One edit per request held to floors or ceilings: scored and filtered here as its request's one candidate.
        self.filters = candidates if candidates is not None and (candidates.enabled or candidates.filters_single) \
            else None
        self.labels = LabelTexts(label_template, list(label_classes or ())) if label_template else None
        self._coverage_floored = self.filters is not None and "mask_coverage" in self.filters.scores_used
        # The settings of the block's candidates by id (an actor runs one block at a time)
        self.candidate_settings: dict[str, object] = {}
        self.scorer = scorer
        if self.filters is not None and scorer is None and self.filters.scores_used & set(CLIP_SCORES):
            # One CLIP model in the edit actor (no CLIP stage then: plan.edit_pass_stages)
            from diffedit_batch.recipe.clip_score import ClipScorer

            quiet_model_loading()
            self.scorer = ClipScorer(clip_model, device=clip_device)
        self.batch_size = batch_size
        self.mode = mode
        self.concept_captions = concept_captions or {}  # concept -> its Flan-T5 captions
        self.concept_embeddings: dict = {}
        self.engine = engine
        if mode == "edit" and engine is None:
            from diffedit_batch.engine import DiffEditEngine

            quiet_model_loading()
            self.engine = DiffEditEngine.from_pretrained(
                model_config.pretrained,
                device=model_config.device,
                dtype=model_config.dtype,
                revision=model_config.revision,
                max_unet_batch=model_config.max_unet_batch,
                compile_unet=model_config.compile_unet,
                compile_mode=model_config.compile_mode,
                channels_last=None if model_config.channels_last else False,  # None: on for CUDA only
                vae_slicing=model_config.vae_slicing,
                vae_tiling=model_config.vae_tiling,
                vae=model_config.vae,
                max_sequence_length=model_config.max_sequence_length,
                text_encoder_device=model_config.text_encoder_device,
            )
            if model_config.family not in ("auto", self.engine.family_name):
                raise ValueError(f"model.family is {model_config.family!r} but {model_config.pretrained} loaded as an "
                                 f"{self.engine.family_name} model")
        if mode == "noop":
            self.engine = None
        self.latent_cell = self.engine.vae_scale_factor if self.engine is not None else 8
        self.busy_s = 0.0  # seconds spent editing, for the busy fraction
        self.last_batch_end: float | None = None
        self.node_id = _ray_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        require(batch, READS, "edit")
        rows = batch.to_pylist()
        for row in rows:
            # The plan refused targets equal to their source; a caption standing in for a missing source is only
            # known now, and may say what the target says.
            same = row["status"] == Status.PENDING and nothing_to_edit(
                row["source_prompt"], row["target_prompt"], row["source_concept"], row["target_concept"])
            if same:
                row.update(failed(row, ErrorClass.INVALID_ROW, same))
        if self.candidates is not None:
            rows, self.candidate_settings = expand_candidates(rows, self.candidates, self.settings)
        pending = [i for i, row in enumerate(rows) if row["status"] == Status.PENDING]
        if pending:
            started = time.perf_counter()
            # Idle time between batches is the data path starving the actor (the first wait is model start-up).
            waited = started - self.last_batch_end if self.last_batch_end is not None else 0.0
            for call in engine_calls([rows[i] for i in pending], self.batch_size):
                before = self._counters()
                self._edit_rows(call)
                # The call's work, on its first row: the commit stage's summaries carry it to the driver.
                call[0]["engine_counts"] = json.dumps(self._counters(before))
            for i in pending:
                rows[i]["node_id"] = self.node_id
                rows[i]["actor_wait_s"] = waited / len(pending)
            if self.filters is not None:
                score_and_select(rows, self.filters, self.scorer, self.labels)
            self.last_batch_end = time.perf_counter()
            self.busy_s += self.last_batch_end - started
        return to_table(rows)

    def _counters(self, before: dict | None = None) -> dict:
        """The engine's work counters now, or since `before` (shapes: the ones first seen since)."""
        if self.engine is None:
            counters = {"unet_calls": 0, "unet_samples": 0, "unet_shapes": [], "vae_encodes": 0, "vae_decodes": 0,
                        "text_encodes": 0, "edits": 0}
        else:
            counters = self.engine.stats.counters()
        if before is None:
            return counters
        return {name: sorted(set(map(tuple, value)) - set(map(tuple, before[name]))) if name == "unet_shapes"
                else value - before[name] for name, value in counters.items()}

    def _edit_rows(self, rows: list[dict]) -> None:
        started = time.perf_counter()
        try:
            results = self._run(rows)
        except Exception:  # noqa: BLE001 - isolate the row that broke the batch
            if len(rows) == 1:
                rows[0].update(failed(rows[0], ErrorClass.ENGINE, _error_text_from_current()))
                return
            for row in rows:
                self._edit_rows([row])
            return
        seconds = (time.perf_counter() - started) / len(rows)
        for row, (edited, mask, truncated) in zip(rows, results):
            if edited is None:  # the engine's latents or pixels were NaN/Inf: a black picture is not an edit
                row.update(failed(row, ErrorClass.ENGINE, NON_FINITE_EDIT))
                continue
            row.update(
                edited=edited.tobytes(),
                mask=np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
                mask_height=mask.shape[0],
                mask_width=mask.shape[1],
                mask_coverage=mask_coverage(mask),
                prompt_truncated=truncated,
                edit_s=seconds,
            )
            if self._coverage_floored and row.get("width"):
                # held to a floor or ceiling: the coverage the record will have, of the final mask at picture size
                row["mask_coverage"] = mask_coverage(final_mask(mask, (row["width"], row["height"]), row.get("region")))
            if self.engine is not None and not mask.any():
                # DiffEdit's mask (and the region) left nothing to change: the "edit" would be the input
                reason = NOTHING_LEFT + (" (the region leaves none of DiffEdit's mask)" if row.get("region") else "")
                row.update(status=Status.FILTERED, filter_reason=reason)
                if self.filters is None or not self.filters.keep_rejected:
                    row.update(dict.fromkeys(PAYLOADS))

    def _run(self, rows: list[dict]) -> list[tuple[Image.Image, np.ndarray, bool]]:
        images = [Image.frombytes("RGB", (row["model_width"], row["model_height"]), row["pixels"]) for row in rows]
        if self.engine is None:
            cell = self.latent_cell
            return [(image, np.zeros((image.height // cell, image.width // cell), np.uint8), False) for image in images]
        regions = [self._region(row) for row in rows]
        # regions only when some row has one (stand-in engines of the tests take none)
        with_regions = {"regions": regions} if any(region is not None for region in regions) else {}
        results = self.engine.edit(
            images,
            [self._prompt(row, "source") for row in rows],
            [self._prompt(row, "target") for row in rows],
            [row["seed"] for row in rows],
            settings=[self.candidate_settings.get(row["edit_id"], self.settings) for row in rows],
            inversion_prompts=[row["inversion_prompt"] for row in rows],
            **with_regions,
        )
        return [(result.image, result.mask, bool(result.truncated_prompts)) for result in results]

    def _region(self, row: dict):
        """The row's region as the engine's constraint at latent size (None when it has none): a cell that touches a
        pixel to keep is kept."""
        if not row.get("region"):
            return None
        area = unpack(row["region"], row["width"], row["height"])
        cell = self.latent_cell
        return latent_constraint(area, row["model_height"] // cell, row["model_width"] // cell)

    def _prompt(self, row: dict, side: str):
        """The row's prompt, else the mean embedding of its concept's captions (computed once per concept)."""
        if row[f"{side}_prompt"] is not None:
            return row[f"{side}_prompt"]
        concept = row[f"{side}_concept"]
        if concept not in self.concept_captions:
            raise ValueError(f"no captions were generated for {side} concept {concept!r}")
        if concept not in self.concept_embeddings:
            from diffedit_batch.recipe.concepts import concept_embedding

            self.concept_embeddings[concept] = concept_embedding(self.engine, self.concept_captions[concept])
        return self.concept_embeddings[concept]


def edit_stage(config: Config, concept_captions: dict[str, list[str]] | None = None,
               label_classes: list[str] | None = None) -> Stage:
    """The edit actor pool: `job.num_actors` (up to `job.max_actors`) actors, each holding one engine.

    A dead edit actor (node lost, OOM kill) is restarted and its in-flight batches are retried, so each edit still
    ends as exactly one record: Ray Data's pool defaults (max_restarts=-1, max_task_retries=-1). They are not
    passed here (extra remote args are deprecated in Ray 2.60); tests/cluster/test_faults.py checks them by killing
    an edit actor mid-run.
    """
    job = config.job
    return Stage(
        name="edit", run=EditStage, reads=READS, adds=ADDS, cpus=job.cpus_per_actor, gpus=job.gpus_per_actor,
        actors=(job.num_actors, max(job.num_actors, job.max_actors or job.num_actors)), batch_size=None,
        max_tasks_in_flight_per_actor=job.max_tasks_in_flight_per_actor,
        kwargs={"model_config": config.model, "edit_settings": config.edit, "mode": job.mode,
                "concept_captions": concept_captions, "batch_size": job.batch_size,
                "candidates": config.candidates, "clip_model": config.metrics.clip_model,
                "clip_device": config.metrics.clip_device, "label_template": config.prompts.label_template,
                "label_classes": label_classes},
    )


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
