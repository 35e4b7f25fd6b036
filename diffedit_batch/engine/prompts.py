"""Text conditioning: each distinct prompt runs through the text encoder once.

A prompt is a string or a precomputed embedding (a tensor of shape (seq_len, dim) or (1, seq_len, dim), e.g.
the mean embedding of many Flan-T5 captions). Both are keyed by content, so rows that repeat a prompt share
its encoding, and a small LRU keeps recent embeddings across calls (an actor sees the same prompts often).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Union

import torch

Prompt = Union[str, torch.Tensor]


def prompt_key(prompt: Prompt) -> tuple:
    """A hashable key by content: the text itself, or a digest of an embedding's values."""
    if isinstance(prompt, str):
        return ("text", prompt)
    if isinstance(prompt, torch.Tensor):
        values = prompt.detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.blake2b(values.numpy().tobytes(), digest_size=16).hexdigest()
        return ("embedding", tuple(values.shape), digest)
    raise TypeError(f"a prompt must be a string or a torch.Tensor embedding, got {type(prompt).__name__}")


@dataclass
class EncodedPrompt:
    embedding: torch.Tensor  # (1, seq_len, dim) on the engine's device and dtype
    truncated: bool  # the text was longer than the tokenizer's model_max_length and was cut


class PromptEncoder:
    """Encodes prompts exactly as diffusers' `encode_prompt` does (max-length padding, truncation, no clip_skip)."""

    def __init__(self, text_encoder, tokenizer, device: torch.device, dtype: torch.dtype, cache_size: int = 256):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, EncodedPrompt] = OrderedDict()
        self.texts_encoded = 0  # prompts that went through the text encoder since construction

    def encode(self, prompts: list[Prompt], max_batch: int = 64) -> dict[tuple, EncodedPrompt]:
        """Encode the distinct prompts among `prompts`; returns {prompt_key: EncodedPrompt}."""
        wanted: dict[tuple, Prompt] = {}
        for prompt in prompts:
            wanted.setdefault(prompt_key(prompt), prompt)
        found: dict[tuple, EncodedPrompt] = {}
        texts: list[tuple[tuple, str]] = []
        for key, prompt in wanted.items():
            if key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
            elif isinstance(prompt, str):
                texts.append((key, prompt))
            else:
                found[key] = self._remember(key, EncodedPrompt(self._check_embedding(prompt), truncated=False))
        for start in range(0, len(texts), max_batch):
            chunk = texts[start : start + max_batch]
            embeddings, truncated = self._encode_texts([text for _, text in chunk])
            for (key, _), embedding, cut in zip(chunk, embeddings, truncated):
                found[key] = self._remember(key, EncodedPrompt(embedding.unsqueeze(0), cut))
        return found

    def _remember(self, key: tuple, encoded: EncodedPrompt) -> EncodedPrompt:
        if self.cache_size > 0:
            self._cache[key] = encoded
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return encoded

    def _check_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        if embedding.ndim == 2:
            embedding = embedding.unsqueeze(0)
        hidden = self.text_encoder.config.hidden_size
        if embedding.ndim != 3 or embedding.shape[0] != 1 or embedding.shape[-1] != hidden:
            raise ValueError(
                f"a prompt embedding must have shape (seq_len, {hidden}) or (1, seq_len, {hidden}), "
                f"got {tuple(embedding.shape)}"
            )
        return embedding.to(self.device, self.dtype)

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        self.texts_encoded += len(texts)
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        full_lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False).input_ids]
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(self.device)
        output = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=attention_mask)
        embeddings = output[0].to(self.device, self.dtype)
        return embeddings, [length > max_length for length in full_lengths]
