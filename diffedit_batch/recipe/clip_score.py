"""CLIP similarity of images to prompts, for per-edit quality metrics.

A score is the cosine similarity of CLIP's projected image and text embeddings, in [-1, 1] (not CLIPScore's
``2.5 * max(cos, 0)`` rescaling, so scores of different CLIP models stay comparable to their own papers).
Prompts longer than CLIP's 77 tokens are truncated, as in the edit itself.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from diffedit_batch.engine.devices import resolve_device

__all__ = ["ClipScorer"]


class ClipScorer:
    """A CLIP model and its processor, loaded once (``from_pretrained``, safetensors only)."""

    def __init__(self, pretrained: str, device: str = "auto", revision: str | None = None):
        from transformers import CLIPModel, CLIPProcessor

        self.device = resolve_device(device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = CLIPModel.from_pretrained(pretrained, revision=revision, use_safetensors=True, dtype=dtype)
        self.model.to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(pretrained, revision=revision)

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Cosine similarity of ``images[i]`` and ``texts[i]`` for each i (equal lengths)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return []
        inputs = self.processor(
            text=list(texts), images=list(images), return_tensors="pt", padding=True, truncation=True
        )
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        outputs = self.model(**inputs)
        # CLIPModel returns both embeddings L2-normalised: the row-wise dot product is the cosine.
        cosines = (outputs.image_embeds.float() * outputs.text_embeds.float()).sum(dim=-1)
        return [float(value) for value in cosines.cpu()]
