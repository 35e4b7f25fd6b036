"""Concepts: Flan-T5 captions of each distinct concept of the job, in their own actor, before the edits."""

from __future__ import annotations

import pyarrow as pa

from diffedit_batch.config import Config

from .spec import Stage, quiet_model_loading

CONCEPT_SCHEMA = pa.schema([pa.field("concept", pa.string()), pa.field("captions", pa.list_(pa.string()))])


class ConceptStage:
    """Concept -> its Flan-T5 captions. Seeded per concept, so a re-run writes the same captions."""

    def __init__(self, concepts_config):
        quiet_model_loading()
        from diffedit_batch.recipe.concepts import ConceptPromptGenerator

        self.config = concepts_config
        self.generator = ConceptPromptGenerator.from_pretrained(
            concepts_config.model, device=concepts_config.device, dtype=concepts_config.dtype
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        concepts = batch.column("concept").to_pylist()
        config = self.config
        captions = self.generator.generate_concept_prompts(
            concepts,
            num_captions=config.num_captions,
            instruction=config.instruction,
            temperature=config.temperature,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            seed=config.seed,
        )
        return pa.table({"concept": concepts, "captions": [captions[concept] for concept in concepts]})


def concepts_stage(config: Config) -> Stage:
    """One Flan-T5 actor with its own resources, in a pass of its own before the edits (`concepts.cpus`, `.gpus`)."""
    return Stage(
        name="concepts", run=ConceptStage, reads=("concept",), adds=("captions",), cpus=config.concepts.cpus,
        gpus=config.concepts.gpus, actors=(1, 1), batch_size=16, kwargs={"concepts_config": config.concepts},
        schema=CONCEPT_SCHEMA,
    )
