"""Text conditioning of a batch of UNet samples, whatever the model family.

Stable Diffusion 1.x/2.x conditions the UNet on per-token text embeddings alone; SDXL adds a pooled embedding per
sample (and size micro-conditioning, which the family derives from the latents). The DiffEdit math only ever
concatenates, repeats, slices and pads a batch's conditioning, so one small value type carries both and the math
never learns which family it drives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Conditioning:
    """Per-sample text conditioning: `tokens` (B, seq_len, dim) and, for SDXL, `pooled` (B, pooled_dim)."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @staticmethod
    def cat(parts: Sequence["Conditioning"]) -> "Conditioning":
        """The samples of `parts`, in order."""
        pooled = [part.pooled for part in parts]
        if any(p is None for p in pooled) and not all(p is None for p in pooled):
            raise ValueError("cannot batch conditioning with and without pooled embeddings")
        return Conditioning(
            torch.cat([part.tokens for part in parts]),
            None if pooled[0] is None else torch.cat(pooled),
        )

    def repeat(self, count: int) -> "Conditioning":
        """A one-sample conditioning as `count` samples (views, no copy)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a single sample, got {len(self)}")
        return Conditioning(
            self.tokens.expand(count, -1, -1),
            None if self.pooled is None else self.pooled.expand(count, -1),
        )

    def __getitem__(self, index: slice) -> "Conditioning":
        if not isinstance(index, slice):
            raise TypeError("Conditioning is indexed by slices, so every part keeps its batch axis")
        return Conditioning(self.tokens[index], None if self.pooled is None else self.pooled[index])

    def padded(self, padding: int) -> "Conditioning":
        """Grown by `padding` copies of the last sample, each part a fresh tensor in the standard layout (what a
        compiled UNet's static batch needs; see `unet_runner`)."""

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            if padding:
                tensor = torch.cat([tensor, tensor[-1:].expand(padding, *tensor.shape[1:])])
            return tensor.clone(memory_format=torch.contiguous_format)

        return Conditioning(pad(self.tokens), None if self.pooled is None else pad(self.pooled))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        return Conditioning(
            self.tokens.to(device, dtype),
            None if self.pooled is None else self.pooled.to(device, dtype),
        )

    def zeros_like(self) -> "Conditioning":
        return Conditioning(
            torch.zeros_like(self.tokens), None if self.pooled is None else torch.zeros_like(self.pooled)
        )
