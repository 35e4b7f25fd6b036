"""The Ray Data plan: which stage runs where, with what resources, in what order.

read manifest -> expand (CPU) -> fetch (CPU) -> edit (actor pool, GPU) [-> CLIP scores (actor pool)] -> write (CPU)

Everything streams: blocks flow through the stages as they are ready, so memory is bounded by the blocks in
flight, not by the manifest. CPU stages are tasks that Ray Data autoscales; the edit pool has a fixed size (or
a min..max range) because loading a model is costly.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.data import ActorPoolStrategy

from diffedit_batch.config import Config
from diffedit_batch.data.manifest import MANIFEST_COLUMNS

from .stages.captions import CaptionStage
from .stages.clip_scores import ClipScoreStage
from .stages.concepts import ConceptStage
from .stages.edit import EditStage
from .stages.expand import expand_requests
from .stages.fetch import fetch_images
from .stages.read import read_manifest_rows
from .stages.write import write_outputs


@dataclass(frozen=True)
class JobPaths:
    manifest_files: list[str]
    base_dir: str  # relative image URIs resolve against this
    output_prefix: str


def edit_pool(config: Config) -> ActorPoolStrategy:
    job = config.job
    if job.max_actors is not None and job.max_actors > job.num_actors:
        return ActorPoolStrategy(
            min_size=job.num_actors,
            max_size=job.max_actors,
            max_tasks_in_flight_per_actor=job.max_tasks_in_flight_per_actor,
        )
    return ActorPoolStrategy(size=job.num_actors, max_tasks_in_flight_per_actor=job.max_tasks_in_flight_per_actor)


def _resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"num_cpus": cpus, **({"num_gpus": gpus} if gpus > 0 else {})}


def generate_concept_captions(config: Config, concepts: list[str]) -> dict[str, list[str]]:
    """Flan-T5 captions of each distinct concept of the job, in their own stage (one actor, its own resources).

    Runs once per job before the edits: concepts are few, and every edit actor needs all of their captions.
    """
    if not concepts:
        return {}
    dataset = ray.data.from_items([{"concept": concept} for concept in concepts]).map_batches(
        ConceptStage,
        batch_format="pyarrow",
        batch_size=16,
        compute=ActorPoolStrategy(size=1),
        fn_constructor_kwargs={"concepts_config": config.concepts},
        **_resources(config.concepts.cpus, config.concepts.gpus),
    )
    return {row["concept"]: list(row["captions"]) for row in dataset.take_all()}


def build_dataset(
    config: Config,
    paths: JobPaths,
    schema_names: list[str],
    registry,
    run_id: str,
    concept_captions: dict[str, list[str]] | None = None,
    caption_images: bool = False,
) -> ray.data.Dataset:
    """The job's dataset; consuming it runs the job and yields one summary row per edit.

    `concept_captions` (from `generate_concept_captions`) turn concepts into prompts in the edit stage;
    `caption_images` adds the BLIP stage, for rows without a source or when the config asks for caption inversion.
    """
    options = config.storage
    known = [column.name for column in MANIFEST_COLUMNS if column.name in schema_names]
    batch_size = config.job.batch_size
    # Our own reader over the files we already listed: every stage's CPU demand stays set here, so the job
    # fits beside the actor pools even on a 2-core machine (Ray Data's file listing task wants a whole CPU).
    dataset = ray.data.from_items([{"file": uri} for uri in paths.manifest_files]).map_batches(
        read_manifest_rows,
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=0.25,
        fn_kwargs={"options": options, "columns": known},
    )
    dataset = dataset.map_batches(
        expand_requests,
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=0.25,
        fn_kwargs={
            "registry": registry,
            "base_dir": paths.base_dir,
            "job_seed": config.job.seed,
            # in noop mode no captioner runs, but rows that would get a caption still travel the data path
            "caption_available": caption_images or config.job.mode == "noop",
        },
    )
    dataset = dataset.map_batches(
        fetch_images,
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=config.job.decode_cpus,
        fn_kwargs={
            "options": options,
            "resolution": config.model.resolution,
            "max_pixels": config.job.max_image_pixels,
        },
    )
    if caption_images:
        dataset = dataset.map_batches(
            CaptionStage,
            batch_format="pyarrow",
            batch_size=config.captions.batch_size,
            compute=ActorPoolStrategy(size=1),
            fn_constructor_kwargs={"captions_config": config.captions},
            **_resources(config.captions.cpus, config.captions.gpus),
        )
    dataset = dataset.map_batches(
        EditStage,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=edit_pool(config),
        fn_constructor_kwargs={
            "model_config": config.model,
            "edit_settings": config.edit,
            "mode": config.job.mode,
            "concept_captions": concept_captions,
        },
        # A dead edit actor (node lost, OOM kill) is restarted and its in-flight batches are retried, so each
        # edit still ends as exactly one record: Ray Data's pool defaults (max_restarts=-1, max_task_retries=-1).
        # Not passed here: extra remote args are deprecated in Ray 2.60 and go in 2.64. The job relies on the
        # defaults, and tests/cluster/test_faults.py checks them by killing an edit actor mid-run.
        **_resources(config.job.cpus_per_actor, config.job.gpus_per_actor),
    )
    if config.metrics.clip_model is not None:
        dataset = dataset.map_batches(
            ClipScoreStage,
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ActorPoolStrategy(size=config.metrics.clip_num_actors),
            fn_constructor_kwargs={"clip_model": config.metrics.clip_model, "device": config.metrics.clip_device},
            **_resources(config.metrics.clip_cpus_per_actor, config.metrics.clip_gpus_per_actor),
        )
    dataset = dataset.map_batches(
        write_outputs,
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=config.job.write_cpus,
        fn_kwargs={
            "output_prefix": paths.output_prefix,
            "options": options,
            "model_id": config.model.pretrained,
            "run_id": run_id,
            "background_metrics": config.metrics.background,
        },
    )
    return dataset
