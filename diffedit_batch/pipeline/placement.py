"""The placement check: fail fast when the stages could never all be placed, instead of waiting forever."""

from __future__ import annotations

import logging

import ray

from diffedit_batch.config import Config

log = logging.getLogger("diffedit_batch.job")


class JobSetupError(RuntimeError):
    """The job cannot run as configured on this cluster (raised before any edit)."""


def check_placement(config: Config, caption_images: bool, elastic: bool) -> None:
    """Raise JobSetupError when the actor pools and tasks cannot fit the cluster.

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
