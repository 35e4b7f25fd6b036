"""The edit pass: which stages run, in what order, built from the stages' own declarations.

read work list (CPU) -> fetch (CPU) [-> captions (actor)] -> edit (actor pool, GPU) [-> CLIP scores (actor pool)]
-> write (CPU) -> commit (CPU)

Everything streams: blocks flow through the stages as they are ready, so memory is bounded by the blocks in
flight, not by the manifest. CPU stages are tasks that Ray Data autoscales; the edit pool has a fixed size (or a
min..max range) because loading a model is costly. Concepts are captioned in a pass of their own before it.
"""

from __future__ import annotations

import ray

from diffedit_batch.config import Config

from .stages.candidates import candidates_use_clip
from .stages.captions import captions_stage
from .stages.clip_scores import clip_stage
from .stages.commit import commit_stage
from .stages.concepts import concepts_stage
from .stages.edit import edit_stage
from .stages.fetch import fetch_stage
from .stages.read import read_embedded_stage, read_work_stage, work_tasks
from .stages.spec import Stage, apply, check_chain
from .stages.write import write_stage


def edit_pass_stages(
    config: Config,
    output_prefix: str,
    run_id: str,
    *,
    caption_images: bool,
    concept_captions: dict[str, list[str]] | None = None,
    label_classes: list[str] | None = None,
    input_spec=None,
    work_files: list[tuple[str, int]] = (),
) -> list[Stage]:
    """The edit pass's stages, in order. `caption_images` adds the BLIP stage (rows without a source, or caption
    inversion; never in noop mode, where no model runs). `label_classes`: every class of the label column (the
    clip_label score's choices). An input that embeds its pictures (`input_spec.embedded`) is read by spans of the
    input, its pictures with it (`stages.read.read_embedded_work`), the work list's rows joined to them."""
    embedded = input_spec is not None and input_spec.embedded
    first = (read_embedded_stage(config, [uri for uri, _ in work_files], input_spec.image) if embedded
             else read_work_stage(config))
    stages = [first, fetch_stage(config)]
    if caption_images and config.job.mode == "edit":
        stages.append(captions_stage(config))
    stages.append(edit_stage(config, concept_captions, label_classes))
    # Candidates ranked or filtered by CLIP scores are scored by the edit actor, which holds the CLIP model then.
    if config.metrics.clip_model is not None and not candidates_use_clip(config):
        stages.append(clip_stage(config))
    stages += [write_stage(config, output_prefix), commit_stage(config, output_prefix, run_id, input_spec)]
    check_chain(stages, initial=())
    return stages


def edit_pass(stages: list[Stage], work_files: list[tuple[str, int]], config: Config,
              spans: list[dict] | None = None) -> ray.data.Dataset:
    """The edit pass over the run's work list (files and their row counts), or over `spans` of an input that embeds
    its pictures (`stages.read.embedded_spans`); consuming it runs it and yields one summary row per edit."""
    job = config.job
    actors = max(job.num_actors, job.max_actors or 0)
    if spans is not None:
        source = ray.data.from_items(spans, override_num_blocks=len(spans))
    else:
        # a row and a block a read task: the slices of small work files share one (`work_tasks`)
        tasks = work_tasks(work_files, job.batch_size, actors=actors)
        source = ray.data.from_items([{"slices": task} for task in tasks], override_num_blocks=max(1, len(tasks)))
    dataset = apply(source, stages)
    limit_object_store(dataset, job.object_store_mib_per_actor * 2**20 * actors)
    return dataset


def limit_object_store(dataset: ray.data.Dataset, limit_bytes: int) -> None:
    """Cap the object-store memory `dataset`'s execution may fill (0: Ray Data's own limit, half the cluster's store).

    Whichever stage is slowest, the rows before it wait in the object store: with a noop or fast GPU edit the edits
    wait for the writers, with a slow one the decoded pictures wait for the actors. Ray Data stops launching tasks
    upstream of a stage once its budget is used, so the queue, and the store pages each worker that wrote it still
    maps, stay at this size however many rows the run has; without a cap they grow to half the store (gigabytes
    on one machine). The CPU, GPU and memory limits stay Ray Data's (auto-detected, and growing with an autoscaler).
    """
    if limit_bytes > 0:
        from ray.data import ExecutionResources

        dataset.context.execution_options.resource_limits = ExecutionResources.for_limits(
            object_store_memory=limit_bytes)


def generate_concept_captions(config: Config, concepts: list[str]) -> dict[str, list[str]]:
    """Flan-T5 captions of each distinct concept of the run, in their own pass (one actor, its own resources).

    Runs once per run before the edits: concepts are few, and every edit actor needs all of their captions.
    """
    if not concepts:
        return {}
    dataset = apply(ray.data.from_items([{"concept": concept} for concept in concepts]), [concepts_stage(config)])
    return {row["concept"]: list(row["captions"]) for row in dataset.take_all()}
