"""What a stage declares: its name, what it runs, where (tasks or an actor pool), with what resources, and which
work-row columns it reads and adds. The plan is built from a list of these, and the placement check before a run
is computed from the same list, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..rows import WORK_SCHEMA


@dataclass(frozen=True)
class Stage:
    """One `map_batches` stage of the job.

    `run` is a function (run as Ray tasks) or a class (loaded once per actor of a pool of `actors` = (min, max)
    actors, then called per batch). `kwargs` go to the function, or to the class's constructor. `reads` and
    `adds` are columns of `schema` (the work row, `rows.WORK_SCHEMA`, unless the stage belongs to another pass;
    None where the pass has no single row schema).
    """

    name: str
    run: Callable | type
    reads: tuple[str, ...]
    adds: tuple[str, ...]
    cpus: float
    gpus: float = 0.0
    actors: tuple[int, int] | None = None
    batch_size: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_tasks_in_flight_per_actor: int | None = None
    schema: pa.Schema | None = WORK_SCHEMA

    def __post_init__(self) -> None:
        unknown = sorted((set(self.reads) | set(self.adds)) - set(self.schema.names)) if self.schema else []
        if unknown:
            raise ValueError(f"stage {self.name!r} declares columns that are not in its schema: {', '.join(unknown)}")
        if self.actors is not None and not 1 <= self.actors[0] <= self.actors[1]:
            raise ValueError(f"stage {self.name!r}: actor pool bounds must be 1 <= min <= max, got {self.actors}")

    @property
    def is_actor_pool(self) -> bool:
        return self.actors is not None

    def map_batches_args(self) -> dict[str, Any]:
        """The `Dataset.map_batches` keyword arguments of this stage."""
        from ray.data import ActorPoolStrategy

        args: dict[str, Any] = {"batch_format": "pyarrow", "batch_size": self.batch_size, "num_cpus": self.cpus}
        if self.gpus > 0:
            args["num_gpus"] = self.gpus
        if self.actors is None:
            args["fn_kwargs"] = self.kwargs
            return args
        low, high = self.actors
        in_flight = {"max_tasks_in_flight_per_actor": self.max_tasks_in_flight_per_actor} \
            if self.max_tasks_in_flight_per_actor is not None else {}
        pool = ActorPoolStrategy(size=low, **in_flight) if low == high else \
            ActorPoolStrategy(min_size=low, max_size=high, **in_flight)
        args.update(compute=pool, fn_constructor_kwargs=self.kwargs)
        return args


def check_chain(stages: Sequence[Stage], initial: Sequence[str]) -> None:
    """Raise ValueError when a stage reads a column that no earlier stage (nor the input) provides."""
    available = set(initial)
    for stage in stages:
        missing = sorted(set(stage.reads) - available)
        if missing:
            raise ValueError(f"stage {stage.name!r} reads {', '.join(missing)}, which no earlier stage adds")
        available |= set(stage.adds)


def quiet_model_loading() -> None:
    """No download or weight-loading progress bars from an actor's model loading: Ray forwards a worker's stderr to
    the driver's console, where they would interleave with the job's own progress."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


def apply(dataset, stages: Sequence[Stage]):
    """`dataset` with each stage mapped over it, in order. A source stage that takes one item a task keeps doing so:
    a later stage that Ray Data would fuse with it and that takes larger batches (`would_bundle_items`) is kept
    apart."""
    source = None  # a one-item-a-task stage heading the stages Ray Data fuses with it
    previous = None
    for stage in stages:
        args = stage.map_batches_args()
        fused = previous is not None and _fuses(previous, stage)
        if fused and source is not None and would_bundle_items(source, stage):
            # Ray Data fuses only stages of equal remote arguments. SPREAD is the scheduling it gives a task of
            # small arguments anyway (a work row, not its picture); named here, it makes the arguments differ.
            args["scheduling_strategy"] = "SPREAD"
            fused = False
        if not fused:
            source = stage if stage.batch_size == 1 and not stage.is_actor_pool else None
        dataset = dataset.map_batches(stage.run, **args)
        previous = stage
    return dataset


def _fuses(upstream: Stage, downstream: Stage) -> bool:
    """Whether Ray Data fuses `downstream` into `upstream`: a task stage into a task or actor stage of equal
    resources (the stages' other remote arguments are the same)."""
    return not upstream.is_actor_pool and (upstream.cpus, upstream.gpus) == (downstream.cpus, downstream.gpus)


def would_bundle_items(upstream: Stage, downstream: Stage) -> bool:
    """Whether `downstream`, fused with `upstream` (directly or through stages that take blocks as they come), would
    hand each fused task `downstream.batch_size` of `upstream`'s inputs. A fused task takes the largest batch size of
    its stages in *input* rows: a stage that reads one file or slice a task (batch size 1) fused with one of batch
    size 32 reads 32 files in one task, and a manifest of a few files is read by one task on one core (the plan's
    requests read a 10^7-row manifest serially: 300 s on two cores)."""
    return (upstream.batch_size == 1 and downstream.batch_size is not None and downstream.batch_size > 1
            and _fuses(upstream, downstream))
