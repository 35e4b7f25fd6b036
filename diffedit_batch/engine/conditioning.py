"""Text conditioning of a batch of denoiser samples, whatever the model family.

Stable Diffusion 1.x/2.x conditions the UNet on per-token text embeddings alone; SDXL, SD3 and FLUX.1 add a pooled
embedding per sample (SDXL also size micro-conditioning, which the family derives from the latents); FLUX.1-dev
also takes a guidance scale per sample (its guidance embedding). The DiffEdit math only ever concatenates, repeats,
slices and pads a batch's conditioning, so one small value type carries them all and the math never learns which
family it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch


def _cat_optional(values: list, what: str) -> torch.Tensor | None:
    if any(v is None for v in values) and not all(v is None for v in values):
        raise ValueError(f"cannot batch conditioning with and without {what}")
    return None if values[0] is None else torch.cat(values)


@dataclass(frozen=True)
class Conditioning:
    """Per-sample text conditioning: `tokens` (B, seq_len, dim); `pooled` (B, pooled_dim) for SDXL, SD3 and FLUX.1;
    `guidance` (B,) float32 for a guidance-distilled model (FLUX.1-dev), set per stage by the engine, never part of
    a prompt."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @staticmethod
    def cat(parts: Sequence["Conditioning"]) -> "Conditioning":
        """The samples of `parts`, in order."""
        return Conditioning(
            torch.cat([part.tokens for part in parts]),
            _cat_optional([part.pooled for part in parts], "pooled embeddings"),
            _cat_optional([part.guidance for part in parts], "a guidance scale"),
        )

    def repeat(self, count: int) -> "Conditioning":
        """A one-sample conditioning as `count` samples (views, no copy)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a single sample, got {len(self)}")
        return Conditioning(
            self.tokens.expand(count, -1, -1),
            None if self.pooled is None else self.pooled.expand(count, -1),
            None if self.guidance is None else self.guidance.expand(count),
        )

    def __getitem__(self, index: slice) -> "Conditioning":
        if not isinstance(index, slice):
            raise TypeError("Conditioning is indexed by slices, so every part keeps its batch axis")
        return Conditioning(self.tokens[index], None if self.pooled is None else self.pooled[index],
                            None if self.guidance is None else self.guidance[index])

    def padded(self, padding: int) -> "Conditioning":
        """Grown by `padding` copies of the last sample, each part a fresh tensor in the standard layout (what a
        compiled UNet's static batch needs; see `denoiser_runner`)."""

        def pad(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None:
                return None
            if padding:
                tensor = torch.cat([tensor, tensor[-1:].expand(padding, *tensor.shape[1:])])
            return tensor.clone(memory_format=torch.contiguous_format)

        return Conditioning(pad(self.tokens), pad(self.pooled), pad(self.guidance))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        """On `device`; the embeddings in `dtype`, the guidance scale stays float32 (as the pipelines pass it)."""
        return Conditioning(
            self.tokens.to(device, dtype),
            None if self.pooled is None else self.pooled.to(device, dtype),
            None if self.guidance is None else self.guidance.to(device),
        )

    def zeros_like(self) -> "Conditioning":
        return Conditioning(
            torch.zeros_like(self.tokens), None if self.pooled is None else torch.zeros_like(self.pooled),
            self.guidance,
        )

    def with_guidance(self, scale: float) -> "Conditioning":
        """Every sample with the guidance scale `scale` (float32, on the embeddings' device)."""
        guidance = torch.full((len(self),), float(scale), dtype=torch.float32, device=self.tokens.device)
        return replace(self, guidance=guidance)
