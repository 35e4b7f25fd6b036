"""The edit: guided DDIM denoising under the target prompt, the background kept from the inversion."""

from __future__ import annotations

import torch

from .ddim import DDIMSchedule
from .inversion import guided_prediction
from .unet_runner import UNetRunner


def blend_source(trajectory: list[torch.Tensor], clean_latents: torch.Tensor, step: int, paper_timing: bool):
    """The inverted latent blended in after denoising step `step` (trajectory is lowest noise first).

    The reference blends the latent of the step's *input* timestep (one step late; the last step gets the
    t=1 latent); the paper blends the latent of the step's *output* timestep (the clean latent at the end).
    """
    last = len(trajectory) - 1
    if not paper_timing:
        return trajectory[last - step]
    return clean_latents if step == last else trajectory[last - step - 1]


def denoise_with_mask(
    run_unet: UNetRunner,
    schedule: DDIMSchedule,
    trajectory: list[torch.Tensor],
    clean_latents: torch.Tensor,
    masks: torch.Tensor,
    target: torch.Tensor,
    negative: torch.Tensor | None,
    guidance_scale: float,
    paper_timing: bool,
) -> torch.Tensor:
    """Denoise from the most-noised inverted latents; `masks` (B, 1, h, w) is 1 where the edit may change."""
    latents = trajectory[-1].clone()
    masks = masks.to(latents.dtype)
    for step in range(len(schedule)):
        prediction = guided_prediction(run_unet, latents, schedule.timesteps[step], target, negative, guidance_scale)
        latents = schedule.step(step, prediction, latents)
        source = blend_source(trajectory, clean_latents, step, paper_timing)
        latents = latents * masks + source * (1 - masks)
    return latents
