"""CLIP similarity of images to prompts, for per-edit quality metrics; and a tiny random CLIP for tests.

A score is the cosine similarity of CLIP's projected image and text embeddings, in [-1, 1] (not CLIPScore's
``2.5 * max(cos, 0)`` rescaling, so scores of different CLIP models stay comparable to their own papers).
Prompts longer than CLIP's 77 tokens are truncated, as in the edit itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .loading import resolve_device

__all__ = ["ClipScorer", "build_tiny_clip"]


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


def build_tiny_clip(folder: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Build a tiny random CLIP (model + CLIPProcessor) and save it under ``folder``; return the folder.

    Uses the tiny Stable Diffusion's byte-level BPE tokenizer, so every prompt tokenizes offline.
    Deterministic for a given seed.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from .tiny import MODEL_MAX_LENGTH, _write_clip_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        _write_clip_tokenizer(Path(tokenizer_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": MODEL_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": image_size, "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
