"""The placement check: fail fast when the stages could never all be placed, instead of waiting forever.

Computed from the stages' own declarations (`stages.spec.Stage`): actor pools hold their CPUs and GPUs for the
whole run, each at its minimum size; the task stages need what is left, at least the largest of them at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .stages.spec import Stage

log = logging.getLogger("diffedit_batch.job")


class JobSetupError(RuntimeError):
    """The job cannot run as configured on this cluster (raised before any edit)."""


def placement_problems(stages: Sequence[Stage], resources: dict[str, float]) -> list[str]:
    """Why `stages` cannot all run at once on a cluster with `resources` (Ray's `cluster_resources()`)."""
    pools = [stage for stage in stages if stage.is_actor_pool]
    tasks = [stage for stage in stages if not stage.is_actor_pool]
    problems = []
    total_gpus = resources.get("GPU", 0)
    held_gpus = sum(stage.gpus * stage.actors[0] for stage in pools)
    if held_gpus > total_gpus:
        wanting = ", ".join(f"{s.name} {s.gpus:g} x {s.actors[0]}" for s in pools if s.gpus > 0)
        problems.append(
            f"the actor pools need {held_gpus:g} GPUs ({wanting}) but the Ray cluster has no GPUs; set "
            "job.gpus_per_actor=0 (and captions.gpus, concepts.gpus, metrics.clip_gpus_per_actor) to run on CPUs"
            if total_gpus == 0 else
            f"the actor pools need {held_gpus:g} GPUs ({wanting}) but the Ray cluster has {total_gpus:g}; "
            "lower job.num_actors or the GPUs per actor"
        )
    held_cpus = sum(stage.cpus * stage.actors[0] for stage in pools)
    task_cpus = max((stage.cpus for stage in tasks), default=0.0)
    total_cpus = resources.get("CPU", 0)
    if held_cpus + task_cpus > total_cpus:
        holders = ", ".join(f"{s.name} {s.cpus:g} x {s.actors[0]}" for s in pools)
        largest = max(tasks, key=lambda stage: stage.cpus).name if tasks else "none"
        problems.append(
            f"the actor pools hold {held_cpus:g} CPUs ({holders}) and the largest task ({largest}) needs "
            f"{task_cpus:g}, but the Ray cluster has {total_cpus:g}; lower job.cpus_per_actor (or captions.cpus, "
            "metrics.clip_cpus_per_actor, job.decode_cpus, job.write_cpus), or add CPUs"
        )
    return problems


def check_placement(stages: Sequence[Stage], elastic: bool) -> None:
    """Raise JobSetupError when the stages cannot fit the Ray cluster. On a cluster we joined (`elastic`), an
    autoscaler may still add nodes, so this only warns there."""
    import ray

    for message in placement_problems(stages, ray.cluster_resources()):
        if not elastic:
            raise JobSetupError(message)
        log.warning("%s (waiting for an autoscaler to add nodes)", message)
