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
        self._class_texts: tuple[str, ...] | None = None  # clip_label's class texts, and their embeddings
        self._class_embeddings: torch.Tensor | None = None

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

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised projected image embeddings (n, dim), float32 on the CPU."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        output = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return torch.nn.functional.normalize(output.pooler_output.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised projected text embeddings (n, dim), float32 on the CPU (truncated at CLIP's context)."""
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        tokens = {name: value.to(self.device) for name, value in tokens.items()}
        output = self.model.get_text_features(**tokens)
        return torch.nn.functional.normalize(output.pooler_output.float(), dim=-1).cpu()

    @torch.inference_mode()
    def label_probabilities(self, images: Sequence[Image.Image], class_texts: Sequence[str],
                            classes: Sequence[int | None]) -> list[float | None]:
        """CLIP zero-shot classification: for each image, the probability of `class_texts[classes[i]]` among all of
        `class_texts` (one text per class, e.g. 'a photo of a {label}' filled with each class name): the softmax of
        CLIP's scaled cosines (its `logit_scale`), as CLIP's paper classifies. None where the class is None."""
        if len(images) != len(classes):
            raise ValueError(f"{len(images)} images but {len(classes)} classes")
        if not images:
            return []
        # The class texts are the same for every batch of a run: embedded once (1000 of them for ImageNet).
        class_texts = tuple(class_texts)
        if self._class_texts != class_texts:
            self._class_texts, self._class_embeddings = class_texts, self.embed_texts(list(class_texts))
        texts = self._class_embeddings
        pictures = self.embed_images(list(images))
        scale = float(self.model.logit_scale.exp())
        probabilities = torch.softmax(scale * pictures @ texts.T, dim=-1)
        return [None if k is None else float(probabilities[i, k]) for i, k in enumerate(classes)]

    def edit_scores(self, inputs: Sequence[Image.Image], edits: Sequence[Image.Image],
                    sources: Sequence[str | None], targets: Sequence[str | None]) -> list[dict[str, float | None]]:
        """The InstructPix2Pix scores of each edit (`edits[i]` of `inputs[i]`, from `sources[i]` to `targets[i]`):

        - `clip_directional`: cosine of (image embedding of the edit - of the input) and (text embedding of the
          target - of the source): does the picture change the way the text does;
        - `clip_image`: cosine of the input's and the edit's image embeddings: is it still the same picture;
        - `clip_target_score`: cosine of the edit and the target text (and `clip_source_score`, of the input and the
          source text, as the CLIP stage scores every edit).
        A score that needs a missing text is None. Equal inputs and texts are embedded once (a request's candidates
        share their input and prompts)."""
        if not (len(inputs) == len(edits) == len(sources) == len(targets)):
            raise ValueError("inputs, edits, sources and targets must have equal lengths")
        if not edits:
            return []
        distinct_inputs: dict[int, int] = {}
        for image in inputs:
            distinct_inputs.setdefault(id(image), len(distinct_inputs))
        input_list = list({id(image): image for image in inputs}.values())
        input_embeddings = self.embed_images(input_list)
        edit_embeddings = self.embed_images(list(edits))
        texts = list(dict.fromkeys(text for text in (*sources, *targets) if text))
        text_embeddings = dict(zip(texts, self.embed_texts(texts))) if texts else {}

        def cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
            norm = float(a.norm() * b.norm())
            return float((a * b).sum() / norm) if norm > 0 else None

        scores = []
        for image, edit, source, target in zip(inputs, edit_embeddings, sources, targets):
            before = input_embeddings[distinct_inputs[id(image)]]
            score = {"clip_image": cosine(before, edit), "clip_directional": None, "clip_target_score": None,
                     "clip_source_score": cosine(before, text_embeddings[source]) if source else None}
            if target:
                score["clip_target_score"] = cosine(edit, text_embeddings[target])
                if source:
                    score["clip_directional"] = cosine(edit - before, text_embeddings[target] - text_embeddings[source])
            scores.append(score)
        return scores
