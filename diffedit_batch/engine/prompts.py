"""Text conditioning: each distinct prompt runs through the text encoder(s) once.

A prompt is a string or a precomputed embedding: a tensor of shape (seq_len, dim) or (1, seq_len, dim) for
Stable Diffusion 1.x/2.x, or a `Conditioning` (tokens and, for SDXL, pooled), e.g. the mean embedding of many
Flan-T5 captions. Both are keyed by content, so rows that repeat a prompt share its encoding, and a small LRU
keeps recent embeddings across calls (an actor sees the same prompts often). How a text is encoded is the model
family's (`families`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Union

import torch

from .conditioning import Conditioning

Prompt = Union[str, torch.Tensor, Conditioning]


def _digest(*tensors: torch.Tensor | None) -> tuple:
    digest = hashlib.blake2b(digest_size=16)
    shapes = []
    for tensor in tensors:
        if tensor is None:
            shapes.append(None)
            continue
        values = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(values.numpy().tobytes())
        shapes.append(tuple(values.shape))
    return (*shapes, digest.hexdigest())


def prompt_key(prompt: Prompt) -> tuple:
    """A hashable key by content: the text itself, or a digest of an embedding's values."""
    if isinstance(prompt, str):
        return ("text", prompt)
    if isinstance(prompt, torch.Tensor):
        return ("embedding", *_digest(prompt))
    if isinstance(prompt, Conditioning):
        if prompt.pooled is None:
            return ("embedding", *_digest(prompt.tokens))  # the same key as its bare tensor
        return ("embedding", *_digest(prompt.tokens, prompt.pooled))
    raise TypeError(
        f"a prompt must be a string, a torch.Tensor embedding or a Conditioning, got {type(prompt).__name__}"
    )


@dataclass
class EncodedPrompt:
    conditioning: Conditioning  # one sample, on the engine's device and dtype
    truncated: bool  # the text was longer than the tokenizer's model_max_length and was cut


class PromptEncoder:
    """Encodes prompts exactly as the family's diffusers `encode_prompt` does (max-length padding, truncation, no
    clip_skip)."""

    def __init__(self, family, device: torch.device, dtype: torch.dtype, cache_size: int = 256):
        self.family = family
        self.device = device
        self.dtype = dtype
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, EncodedPrompt] = OrderedDict()
        self.texts_encoded = 0  # prompts that went through the text encoder(s) since construction

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
                conditioning = prompt if isinstance(prompt, Conditioning) else Conditioning(prompt)
                checked = self.family.check_embedding(conditioning).to(self.device, self.dtype)
                found[key] = self._remember(key, EncodedPrompt(checked, truncated=False))
        for start in range(0, len(texts), max_batch):
            chunk = [text for _, text in texts[start : start + max_batch]]
            self.texts_encoded += len(chunk)
            encoded = self.family.encode_texts(chunk, self.device, self.dtype)
            truncated = self.family.truncated(chunk)
            for i, (key, _) in enumerate(texts[start : start + max_batch]):
                found[key] = self._remember(key, EncodedPrompt(encoded[i : i + 1], truncated[i]))
        return found

    def _remember(self, key: tuple, encoded: EncodedPrompt) -> EncodedPrompt:
        if self.cache_size > 0:
            self._cache[key] = encoded
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return encoded
