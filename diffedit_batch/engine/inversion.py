"""DDIM inversion: walk each latent from the clean image up the noise schedule, keeping every step."""

from __future__ import annotations

import torch

from .ddim import DDIMSchedule
from .unet_runner import UNetRunner


def guided_prediction(
    run_unet: UNetRunner,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    conditional: torch.Tensor,
    unconditional: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guided model output for a batch; `unconditional=None` means one unguided evaluation.
    (DDIM's `scale_model_input` is the identity, so the latents go to the UNet as they are.)"""
    if unconditional is None:
        return run_unet(latents, timestep, conditional)
    prediction = run_unet(torch.cat([latents, latents]), timestep, torch.cat([unconditional, conditional]))
    prediction_unconditional, prediction_text = prediction.chunk(2)
    return prediction_unconditional + guidance_scale * (prediction_text - prediction_unconditional)


def invert(
    run_unet: UNetRunner,
    schedule: DDIMSchedule,
    clean_latents: torch.Tensor,
    conditional: torch.Tensor,
    unconditional: torch.Tensor | None,
    guidance_scale: float,
) -> list[torch.Tensor]:
    """Inverted latents after each step, lowest noise first: a list of len(schedule) tensors (B, C, h, w)."""
    latents = clean_latents
    trajectory = []
    for step in range(len(schedule)):
        prediction = guided_prediction(
            run_unet, latents, schedule.timesteps[step], conditional, unconditional, guidance_scale
        )
        latents = schedule.step(step, prediction, latents)
        trajectory.append(latents)
    return trajectory
