"""Denoiser (UNet or transformer) evaluation in bounded batches: many rows share a forward call, never more than
`max_batch` samples. The family says how the model is called (`families`: its inputs besides the latents, and for
a transformer how latents are packed into tokens and the timestep is scaled); the runner only batches.

On a CUDA out-of-memory error the chunk is halved and retried, and the cap is lowered for later calls, so a
batch that is too large for the card slows down instead of failing its rows.

With `static_shapes` (for a compiled UNet) every call has exactly `max_batch` samples: a short last chunk is
padded along the batch axis (each sample's output depends on that sample alone, so padding changes no row), and
every chunk is a fresh tensor rather than a view at some storage offset. torch.compile then sees one input shape
per latent size, compiles once for it, and CUDA graphs (`mode="reduce-overhead"`) can replay it.
"""

from __future__ import annotations

import logging

from typing import Callable

import torch

from .conditioning import Conditioning

log = logging.getLogger(__name__)


def _plain_inputs(latents: torch.Tensor, conditioning: Conditioning) -> dict:
    return {"encoder_hidden_states": conditioning.tokens}


def call_unet(unet, latents: torch.Tensor, timestep: torch.Tensor, inputs: dict) -> torch.Tensor:
    """A UNet's prediction: `unet(latents, timestep, **inputs).sample` (SD 1.x/2.x, SDXL)."""
    return unet(latents, timestep, **inputs).sample


class DenoiserRunner:
    """Args:
        unet: the diffusers UNet or transformer (the denoiser).
        max_batch: most samples per forward call.
        static_shapes: pad every call to `max_batch` samples (for a compiled UNet).
        unet_inputs: `(latents, conditioning) -> keyword inputs` of the UNet call: the model family's
            (`families`); default per-token conditioning only.
        call_model: `(model, latents, timestep, inputs) -> prediction (B, C, h, w)`: the family's model call;
            default a UNet's.
    """

    def __init__(self, unet, max_batch: int = 16, static_shapes: bool = False,
                 unet_inputs: Callable[[torch.Tensor, Conditioning], dict] = _plain_inputs,
                 call_model: Callable[..., torch.Tensor] = call_unet):
        if max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch}")
        self.unet = unet
        self.unet_inputs = unet_inputs
        self.call_model = call_model
        self.dtype = getattr(unet, "dtype", None)  # a stand-in module in tests may have none
        self.max_batch = max_batch
        self.static_shapes = static_shapes
        self.samples_evaluated = 0  # UNet sample-evaluations since construction (padding not included)
        self.calls = 0  # forward calls since construction
        self.shapes: set[tuple[int, ...]] = set()  # distinct input shapes (B, C, h, w) seen

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """Predict the model output for `latents` (B, C, h, w) at one `timestep` with `conditioning` (B samples),
        in the UNet's dtype (latents in another, e.g. from an upcast VAE, are cast)."""
        outputs = []
        start = 0
        while start < latents.shape[0]:
            size = min(self.max_batch, latents.shape[0] - start)
            try:
                outputs.append(self._forward(latents[start : start + size], timestep, conditioning[start : start + size]))
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                self.max_batch = max(1, size // 2)
                log.warning("the denoiser ran out of memory at batch %d; retrying with at most %d", size, self.max_batch)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += size
        return torch.cat(outputs)

    def _forward(self, latents: torch.Tensor, timestep: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        samples = latents.shape[0]
        self.samples_evaluated += samples
        self.calls += 1
        if self.dtype is not None:
            latents = latents.to(self.dtype)
        if self.static_shapes:
            latents = self._padded(latents, self.max_batch - samples)
            conditioning = conditioning.padded(self.max_batch - samples)
        self.shapes.add(tuple(latents.shape))
        return self.call_model(self.unet, latents, timestep, self.unet_inputs(latents, conditioning))[:samples]

    @staticmethod
    def _padded(tensor: torch.Tensor, padding: int) -> torch.Tensor:
        """`tensor` grown by `padding` copies of its last sample, as a fresh tensor in the standard layout: dynamo
        guards on strides and storage offsets too, and latents reach here channels-last (from the VAE) or as
        slices."""
        if padding:
            tensor = torch.cat([tensor, tensor[-1:].expand(padding, *tensor.shape[1:])])
        return tensor.clone(memory_format=torch.contiguous_format)


UNetRunner = DenoiserRunner  # the name before transformer families
