"""UNet evaluation in bounded batches: many rows share a forward call, never more than `max_batch` samples.

On a CUDA out-of-memory error the chunk is halved and retried, and the cap is lowered for later calls, so a
batch that is too large for the card slows down instead of failing its rows.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class UNetRunner:
    def __init__(self, unet, max_batch: int = 16):
        if max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch}")
        self.unet = unet
        self.max_batch = max_batch
        self.samples_evaluated = 0  # UNet sample-evaluations since construction

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Predict the model output for `latents` (B, C, h, w) at one `timestep` with `embeddings` (B, seq, dim)."""
        outputs = []
        start = 0
        while start < latents.shape[0]:
            size = min(self.max_batch, latents.shape[0] - start)
            try:
                outputs.append(self._forward(latents[start : start + size], timestep, embeddings[start : start + size]))
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                self.max_batch = max(1, size // 2)
                log.warning("UNet ran out of memory at batch %d; retrying with at most %d", size, self.max_batch)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += size
        return torch.cat(outputs)

    def _forward(self, latents: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        self.samples_evaluated += latents.shape[0]
        return self.unet(latents, timestep, encoder_hidden_states=embeddings).sample
