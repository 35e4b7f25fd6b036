"""Captions: BLIP captions of the pictures of pending rows that need one, in their own actor pool."""

from __future__ import annotations

from collections import OrderedDict

import pyarrow as pa
from PIL import Image

from diffedit_batch.config import Config
from diffedit_batch.data.manifest import has_source, needs_caption
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.templates import fill_caption

from ..rows import error_text, failed, require, to_table
from .spec import Stage, quiet_model_loading

READS = ("status", "source_prompt", "source_concept", "inversion_prompt", "target_prompt", "model_width",
         "model_height", "pixels")
ADDS = ("caption", "inversion_prompt", "source_prompt", "target_prompt", "status", "error", "error_class")


def apply_caption(row: dict, caption: str, caption_inversion: bool) -> None:
    """The caption fills a template's `{caption}`, becomes the inversion prompt (when asked, or none was given) and
    stands in for a missing source."""
    row["caption"] = caption
    for name in ("source_prompt", "target_prompt", "inversion_prompt"):
        row[name] = fill_caption(row[name], caption)
    sourceless = not has_source(row["source_prompt"], row["source_concept"])
    # (a row captioned only for a template's {caption} keeps its source as its inversion prompt)
    if caption_inversion or (row["inversion_prompt"] is None and sourceless):
        row["inversion_prompt"] = caption
    if sourceless:
        row["source_prompt"] = caption


class CaptionStage:
    """BLIP captions of the pictures of pending rows that need one; each picture is captioned once."""

    def __init__(self, captions_config, cache_size: int = 4096):
        quiet_model_loading()
        from diffedit_batch.engine.pictures import picture_key
        from diffedit_batch.recipe.captions import ImageCaptioner

        self.config = captions_config
        self.picture_key = picture_key
        self.captioner = ImageCaptioner.from_pretrained(
            captions_config.model, device=captions_config.device, dtype=captions_config.dtype,
            batch_size=captions_config.batch_size,
        )
        # Rows of one picture (several targets, or a picture reused across the manifest) share its caption.
        self.cache: OrderedDict[str, str] = OrderedDict()
        self.cache_size = cache_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        require(batch, READS, "captions")
        rows = batch.to_pylist()
        wanted = [
            row for row in rows
            if row["status"] == Status.PENDING
            and needs_caption(row["source_prompt"], row["source_concept"], self.config.caption_inversion,
                              row["target_prompt"])
        ]
        images = [Image.frombytes("RGB", (row["model_width"], row["model_height"]), row["pixels"]) for row in wanted]
        keys = [self.picture_key(image) for image in images]
        known = {key: self.cache[key] for key in keys if key in self.cache}
        missing = {key: image for key, image in zip(keys, images) if key not in known}
        errors: dict[str, str] = {}
        if missing:
            captions, errors = self._caption(missing)
            known.update(captions)
        for key, caption in known.items():
            self.cache[key] = caption
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        for row, key in zip(wanted, keys):
            if key in errors:  # this picture broke the captioner: its rows' error, not the run's
                row.update(failed(row, ErrorClass.ENGINE, f"captioning the picture failed: {errors[key]}"))
            else:
                apply_caption(row, known[key], self.config.caption_inversion)
        return to_table(rows)

    def _caption(self, pictures: dict[str, Image.Image]) -> tuple[dict[str, str], dict[str, str]]:
        """(captions, errors) by picture key. A batch that fails is captioned picture by picture, so one picture
        that breaks the model fails only its own rows."""
        try:
            captions = self.captioner.caption_images(
                list(pictures.values()), prompt=self.config.prompt, max_new_tokens=self.config.max_new_tokens
            )
            return dict(zip(pictures, captions)), {}
        except Exception as error:  # noqa: BLE001 - isolate the picture that broke the batch
            if len(pictures) == 1:
                return {}, {key: error_text(error) for key in pictures}
        captions, errors = {}, {}
        for key, picture in pictures.items():
            one, failure = self._caption({key: picture})
            captions.update(one)
            errors.update(failure)
        return captions, errors


def captions_stage(config: Config) -> Stage:
    """One BLIP actor with its own resources (`captions.cpus`, `captions.gpus`)."""
    return Stage(
        name="captions", run=CaptionStage, reads=READS, adds=ADDS, cpus=config.captions.cpus,
        gpus=config.captions.gpus, actors=(1, 1), batch_size=config.captions.batch_size,
        kwargs={"captions_config": config.captions},
    )
