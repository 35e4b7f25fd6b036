"""The DiffEdit recipe's optional helpers as pipeline stages: Flan-T5 concept captions, BLIP inversion captions.

Each holds its own model in its own actor pool, with its own resources, so models share a GPU only when the
config gives them fractional GPUs. Neither imports Ray: the plan decides where they run.
"""

from __future__ import annotations

from collections import OrderedDict

import pyarrow as pa
from PIL import Image

from .rows import PENDING, to_table


class ConceptStage:
    """Concept -> its Flan-T5 captions. Seeded per concept, so a re-run writes the same captions."""

    def __init__(self, concepts_config):
        from diffedit_batch.engine.concepts import ConceptPromptGenerator

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


def needs_caption(row: dict, caption_inversion: bool) -> bool:
    """Caption when the config says so, or when the row has no source at all (no prompt, no concept)."""
    return caption_inversion or (row["source_prompt"] is None and row["source_concept"] is None)


def apply_caption(row: dict, caption: str, caption_inversion: bool) -> None:
    """The caption becomes the inversion prompt (when asked, or none was given) and stands in for a missing source."""
    row["caption"] = caption
    if caption_inversion or row["inversion_prompt"] is None:
        row["inversion_prompt"] = caption
    if row["source_prompt"] is None and row["source_concept"] is None:
        row["source_prompt"] = caption


class CaptionStage:
    """BLIP captions of the pictures of pending rows that need one; each picture is captioned once."""

    def __init__(self, captions_config, cache_size: int = 4096):
        from diffedit_batch.engine.captions import ImageCaptioner, image_key

        self.config = captions_config
        self.image_key = image_key
        self.captioner = ImageCaptioner.from_pretrained(
            captions_config.model, device=captions_config.device, dtype=captions_config.dtype,
            batch_size=captions_config.batch_size,
        )
        # Rows of one picture (several targets, or a picture reused across the manifest) share its caption.
        self.cache: OrderedDict[str, str] = OrderedDict()
        self.cache_size = cache_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        wanted = [row for row in rows if row["status"] == PENDING and needs_caption(row, self.config.caption_inversion)]
        images = [Image.frombytes("RGB", (row["width"], row["height"]), row["pixels"]) for row in wanted]
        keys = [self.image_key(image) for image in images]
        known = {key: self.cache[key] for key in keys if key in self.cache}
        missing = {key: image for key, image in zip(keys, images) if key not in known}
        if missing:
            captions = self.captioner.caption_images(
                list(missing.values()), prompt=self.config.prompt, max_new_tokens=self.config.max_new_tokens
            )
            known.update(zip(missing, captions))
        for key, caption in known.items():
            self.cache[key] = caption
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        for row, key in zip(wanted, keys):
            apply_caption(row, known[key], self.config.caption_inversion)
        return to_table(rows)
