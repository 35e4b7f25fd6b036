"""Concept prompts: many Flan-T5 captions of a concept, averaged into one Stable Diffusion prompt embedding.

The DiffEdit guide's recipe for editing towards a concept ("bowl" -> "basket") rather than a single phrase:
sample N captions of images containing the concept from an instruction-tuned seq2seq model, embed each with
Stable Diffusion's text encoder(s) exactly as `encode_prompt` does, and use the mean embedding as the prompt (on SDXL
the pooled embeddings are averaged too).

    generator = ConceptPromptGenerator.from_pretrained("google/flan-t5-large", device="cuda")
    captions = generator.generate_concept_prompts(["bowl", "basket"], num_captions=16, seed=0)
    source = concept_embedding(engine, captions["bowl"])    # a Conditioning: a prompt for DiffEditEngine.edit
    target = concept_embedding(engine, captions["basket"])

Captions are a pure function of (model, concept, instruction, sampling settings, seed) on a given device: each
distinct concept gets its own generator seed derived from (seed, concept), so it does not matter which other
concepts share the call, nor their order.
"""

from __future__ import annotations

from typing import Sequence

import torch

from diffedit_batch.engine.conditioning import Conditioning
from diffedit_batch.engine.devices import resolve_device, resolve_dtype
from diffedit_batch.engine.families import StableDiffusionFamily
from diffedit_batch.engine.prompts import PromptEncoder, prompt_key
from diffedit_batch.seeds import concept_seed

from .defaults import CONCEPT_PLACEHOLDER, DEFAULT_CONCEPT_INSTRUCTION, DEFAULT_CONCEPT_MODEL


def check_concepts(concepts: Sequence[str]) -> list[str]:
    """The distinct concepts, in order of first appearance. Raises ValueError for a None or blank concept."""
    if isinstance(concepts, str):
        raise TypeError("concepts must be a list of strings, not one string")
    distinct: dict[str, None] = {}
    for i, concept in enumerate(concepts):
        if concept is None:
            raise ValueError(f"concept {i} is None; every concept must be a non-empty string")
        if not isinstance(concept, str):
            raise TypeError(f"concept {i} must be a string, got {type(concept).__name__}")
        if not concept.strip():
            raise ValueError(f"concept {i} is empty ({concept!r}); every concept must be a non-empty string")
        distinct.setdefault(concept, None)
    return list(distinct)


class ConceptPromptGenerator:
    """Samples captions of concepts from a seq2seq model (Flan-T5 by default). No Ray, files or config.

    Args:
        model: a transformers seq2seq model (`T5ForConditionalGeneration`), in eval mode on its device.
        tokenizer: its tokenizer.

    Not thread-safe: sampling seeds torch's global RNG for the duration of each concept's `generate` call (and
    restores it afterwards). Use one generator per process or actor, called from one thread.
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.model.requires_grad_(False)
        self.model.eval()
        self.generate_calls = 0  # `generate` calls since construction (one per distinct concept and call)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str = DEFAULT_CONCEPT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
    ) -> "ConceptPromptGenerator":
        """Load a hub id or local folder (safetensors only, no remote code) onto `device` in `dtype`.

        `device` defaults to CUDA when available. `dtype` "auto"/None is bfloat16 on CUDA when the GPU supports
        it (T5 was trained in bfloat16 and its activations can overflow float16), else float32.
        """
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        device = resolve_device(device)
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = resolve_dtype(dtype, device, auto=torch.bfloat16 if bf16 else torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(pretrained, revision=revision)
        model = T5ForConditionalGeneration.from_pretrained(
            pretrained, revision=revision, dtype=dtype, use_safetensors=True
        )
        return cls(model.to(device), tokenizer)

    @torch.no_grad()
    def generate_concept_prompts(
        self,
        concepts: Sequence[str],
        *,
        num_captions: int = 16,
        instruction: str = DEFAULT_CONCEPT_INSTRUCTION,
        temperature: float = 0.8,
        top_k: int = 10,
        max_new_tokens: int = 128,
        seed: int = 0,
    ) -> dict[str, list[str]]:
        """Sample `num_captions` captions for each distinct concept: {concept: [caption, ...]}.

        - One `generate` call per distinct concept (repeats in `concepts` share it), all its captions in that
          call (`num_return_sequences=num_captions`, `do_sample=True` with `temperature` and `top_k`).
        - `instruction` is the model's input with `{concept}` replaced by the concept (no other formatting).
        - Seeded per concept by `concept_seed(seed, concept)`, set right before that concept's call: the same
          arguments give the same captions on the same device and dtype, whatever else is in `concepts`.
        - Keys are the concepts exactly as given, in order of first appearance. Captions are stripped of
          surrounding whitespace; one may be empty (a model that ends at once), which embeds like "".
        Raises ValueError for a None or blank concept or a bad setting.
        """
        distinct = check_concepts(concepts)
        if isinstance(num_captions, bool) or not isinstance(num_captions, int) or num_captions < 1:
            raise ValueError(f"num_captions must be a positive integer, got {num_captions!r}")
        if CONCEPT_PLACEHOLDER not in instruction:
            raise ValueError(f"instruction must contain {CONCEPT_PLACEHOLDER}, got {instruction!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no top-k filtering), got {top_k!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        return {
            concept: self._sample(
                instruction.replace(CONCEPT_PLACEHOLDER, concept),
                concept_seed(seed, concept),
                num_captions=num_captions,
                temperature=temperature,
                top_k=top_k,
                max_new_tokens=max_new_tokens,
            )
            for concept in distinct
        }

    def _sample(self, text: str, seed: int, **settings) -> list[str]:
        # verbose=False: T5's attention is relative, so a concept longer than the tokenizer's 512 tokens is no "indexing
        # error" as transformers warns (from every actor, on the driver's console); it is read whole.
        inputs = self.tokenizer(text, return_tensors="pt", verbose=False).to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self.generate_calls += 1
            outputs = self.model.generate(
                **inputs,
                do_sample=True,
                num_beams=1,
                num_return_sequences=settings["num_captions"],
                temperature=settings["temperature"],
                top_k=settings["top_k"],
                max_new_tokens=settings["max_new_tokens"],
            )
        return [caption.strip() for caption in self.tokenizer.batch_decode(outputs, skip_special_tokens=True)]


def _mean_embedding(encoder: PromptEncoder, captions: Sequence[str]) -> Conditioning:
    if isinstance(captions, str):
        raise TypeError("captions must be a list of strings, not one string")
    captions = list(captions)
    if not captions:
        raise ValueError("captions must hold at least one caption to average")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"caption {i} must be a string, got {type(caption).__name__}")
    encoded = encoder.encode(captions)
    # Every caption counts, repeats included, as in the guide's mean over its list of sentences.
    stacked = Conditioning.cat([encoded[prompt_key(caption)].conditioning for caption in captions])

    def mean(values: torch.Tensor) -> torch.Tensor:
        return values.float().mean(dim=0, keepdim=True).to(values.dtype)

    return Conditioning(mean(stacked.tokens), None if stacked.pooled is None else mean(stacked.pooled))


@torch.no_grad()
def embed_prompts(captions: Sequence[str], text_encoder, tokenizer) -> torch.Tensor:
    """Mean Stable Diffusion 1.x/2.x prompt embedding of `captions`: (1, seq_len, dim), e.g. (1, 77, 1024) for SD 2.1.

    Each caption is embedded exactly as diffusers' `encode_prompt` does (max-length padding, truncation, the
    last hidden state), then the embeddings are averaged (repeats count). On the text encoder's device and
    dtype; usable directly as a prompt in `DiffEditEngine.edit`. Raises ValueError for an empty list.
    For SDXL (two encoders, pooled embeddings) use `concept_embedding` with an SDXL engine.
    """
    family = StableDiffusionFamily(text_encoder, tokenizer)
    encoder = PromptEncoder(family, text_encoder.device, text_encoder.dtype, cache_size=0)
    return _mean_embedding(encoder, captions).tokens


@torch.no_grad()
def concept_embedding(engine, captions: Sequence[str]) -> Conditioning:
    """The mean prompt embedding of `captions` under a `DiffEditEngine`'s text encoder(s), through its prompt cache.

    SD 1.x/2.x: tokens (1, seq_len, dim), as `embed_prompts`. SDXL, SD3, FLUX.1: each caption embedded by every
    encoder as the family's pipeline `encode_prompt` does (SD3: CLIP-L, CLIP-G and T5; FLUX.1: CLIP's pooled output
    and T5's tokens); the per-token embeddings and the pooled embeddings are both averaged. On the engine's device and dtype; a prompt for `engine.edit`. Captions already in the engine's prompt
    cache are not encoded again.
    """
    return _mean_embedding(engine.prompts, captions)
