"""The Ray Data plan: which stage runs where, with what resources, in what order.

read manifest -> expand (CPU) -> fetch (CPU) -> edit (actor pool, GPU) -> write (CPU)

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
from diffedit_batch.data.storage import StorageOptions, resolve

from .stages import EditStage, expand_requests, fetch_images, write_outputs


@dataclass(frozen=True)
class JobPaths:
    manifest_files: list[str]
    base_dir: str  # relative image URIs resolve against this
    output_prefix: str


def storage_options(config: Config) -> StorageOptions:
    return StorageOptions(
        s3_endpoint_url=config.storage.s3_endpoint_url,
        s3_region=config.storage.s3_region,
        allowed_schemes=tuple(config.storage.allowed_schemes),
        write_retries=config.storage.write_retries,
        retry_backoff_s=config.storage.retry_backoff_s,
    )


def edit_pool(config: Config) -> ActorPoolStrategy:
    job = config.job
    if job.max_actors is not None and job.max_actors > job.num_actors:
        return ActorPoolStrategy(
            min_size=job.num_actors,
            max_size=job.max_actors,
            max_tasks_in_flight_per_actor=job.max_tasks_in_flight_per_actor,
        )
    return ActorPoolStrategy(size=job.num_actors, max_tasks_in_flight_per_actor=job.max_tasks_in_flight_per_actor)


def build_dataset(config: Config, paths: JobPaths, schema_names: list[str], registry, run_id: str) -> ray.data.Dataset:
    """The job's dataset; consuming it runs the job and yields one summary row per edit."""
    options = storage_options(config)
    filesystem, _ = resolve(paths.manifest_files[0], options)
    manifest_paths = [resolve(uri, options)[1] for uri in paths.manifest_files]
    known = [column.name for column in MANIFEST_COLUMNS if column.name in schema_names]
    batch_size = config.job.batch_size
    dataset = ray.data.read_parquet(manifest_paths, filesystem=filesystem, columns=known)
    dataset = dataset.map_batches(
        expand_requests,
        batch_format="pyarrow",
        batch_size=batch_size,
        num_cpus=0.25,
        fn_kwargs={"registry": registry, "base_dir": paths.base_dir, "job_seed": config.job.seed},
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
    edit_resources = {"num_cpus": config.job.cpus_per_actor}
    if config.job.gpus_per_actor > 0:
        edit_resources["num_gpus"] = config.job.gpus_per_actor
    dataset = dataset.map_batches(
        EditStage,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=edit_pool(config),
        fn_constructor_kwargs={"model_config": config.model, "edit_settings": config.edit, "mode": config.job.mode},
        **edit_resources,
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
        },
    )
    return dataset
