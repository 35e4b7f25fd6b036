"""Inversion captions: a BLIP caption per picture, to condition DiffEdit's inversion on what the picture shows.

The DiffEdit guide captions the input image with BLIP, conditioned on a text prefix ("a photograph of"), and
passes the caption as the inversion prompt. `ImageCaptioner` does that for many pictures at once: each
distinct picture is captioned once however often it repeats, in batches, with greedy decoding.

    captioner = ImageCaptioner.from_pretrained("Salesforce/blip-image-captioning-base", device="cuda")
    captions = captioner.caption_images(images)            # ["a photograph of a bowl of fruit on a table", ...]
    engine.edit(images, sources, targets, seeds, inversion_prompts=captions)
"""

from __future__ import annotations

from typing import Sequence

import PIL.Image
import torch

from diffedit_batch.engine.devices import resolve_device, resolve_dtype
from diffedit_batch.engine.pictures import picture_key

from .defaults import DEFAULT_CAPTION_MODEL, DEFAULT_CAPTION_PROMPT


class ImageCaptioner:
    """Conditional image captioning with BLIP (`BlipForConditionalGeneration`). No Ray, files or config.

    Args:
        model: a `BlipForConditionalGeneration`, on its device and dtype.
        processor: its `BlipProcessor` (image processor and tokenizer).
        batch_size: most pictures per `generate` call (bounds activation memory).

    Greedy decoding, so there is no seed. Captions are computed per batch; on the CPU a picture's caption does
    not depend on its batch mates (tested), on a GPU batched kernels may, rarely, flip a near-tie token (use
    batch_size=1 where that matters). Stateless apart from counters: safe to call from one thread at a time.
    """

    def __init__(self, model, processor, batch_size: int = 8):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.model.requires_grad_(False)
        self.model.eval()
        self.images_captioned = 0  # distinct pictures that went through the model since construction

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str = DEFAULT_CAPTION_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        batch_size: int = 8,
    ) -> "ImageCaptioner":
        """Load a hub id or local folder (safetensors only, no remote code) onto `device` in `dtype`.

        `device` defaults to CUDA when available; `dtype` to float16 on CUDA (as the DiffEdit guide runs BLIP),
        float32 on CPU.
        """
        from transformers import BlipForConditionalGeneration, BlipProcessor

        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        processor = BlipProcessor.from_pretrained(pretrained, revision=revision)
        model = BlipForConditionalGeneration.from_pretrained(
            pretrained, revision=revision, dtype=dtype, use_safetensors=True
        )
        return cls(model.to(device), processor, batch_size=batch_size)

    @torch.no_grad()
    def caption_images(
        self,
        images: Sequence[PIL.Image.Image],
        prompt: str | None = DEFAULT_CAPTION_PROMPT,
        max_new_tokens: int = 20,
    ) -> list[str]:
        """One caption per picture, aligned with `images`: a list of strings of the same length.

        - `prompt` is the text the caption continues (conditional captioning); the caption starts with it, as
          BLIP's output does ("a photograph of a cat ..."). None captions unconditionally.
        - Each distinct picture (by `picture_key`) runs through the model once; repeats get the same string.
        - `max_new_tokens`: most tokens generated after the prompt.
        A caption can be empty when there is no prompt and the model ends at once; it is then "" (the caller
        decides what an empty caption means: `DiffEditEngine.edit` accepts "" as an unconditional prompt).
        Raises TypeError naming the index of an entry that is not a PIL image.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}")
        keys = []
        distinct: dict[str, PIL.Image.Image] = {}
        for i, image in enumerate(images):
            if not isinstance(image, PIL.Image.Image):
                raise TypeError(f"image {i} must be a PIL image, got {type(image).__name__}")
            key = picture_key(image)
            keys.append(key)
            distinct.setdefault(key, image)
        captions: dict[str, str] = {}
        pending = list(distinct.items())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            texts = self._caption([image for _, image in chunk], prompt, max_new_tokens)
            captions.update(zip((key for key, _ in chunk), texts))
        return [captions[key] for key in keys]

    def _caption(self, images: list[PIL.Image.Image], prompt: str | None, max_new_tokens: int) -> list[str]:
        rgb = [image.convert("RGB") for image in images]
        if prompt is None:
            inputs = self.processor(images=rgb, return_tensors="pt")
        else:
            inputs = self.processor(images=rgb, text=[prompt] * len(rgb), return_tensors="pt")
        inputs = {
            name: value.to(self.device, self.model.dtype) if value.is_floating_point() else value.to(self.device)
            for name, value in inputs.items()
        }
        self.images_captioned += len(images)
        outputs = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        return [text.strip() for text in self.processor.batch_decode(outputs, skip_special_tokens=True)]
