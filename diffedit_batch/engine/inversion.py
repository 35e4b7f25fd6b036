"""DDIM inversion: walk each latent from the clean image up the noise schedule, keeping every step."""

from __future__ import annotations

import torch

from .unet_runner import UNetRunner


def guided_prediction(
    run_unet: UNetRunner,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    scheduler,
    conditional: torch.Tensor,
    unconditional: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guided model output for a batch; `unconditional=None` means one unguided evaluation."""
    if unconditional is None:
        return run_unet(scheduler.scale_model_input(latents, timestep), timestep, conditional)
    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
    prediction = run_unet(model_input, timestep, torch.cat([unconditional, conditional]))
    prediction_unconditional, prediction_text = prediction.chunk(2)
    return prediction_unconditional + guidance_scale * (prediction_text - prediction_unconditional)


def invert(
    run_unet: UNetRunner,
    inverse_scheduler,
    timesteps: torch.Tensor,
    clean_latents: torch.Tensor,
    conditional: torch.Tensor,
    unconditional: torch.Tensor | None,
    guidance_scale: float,
) -> list[torch.Tensor]:
    """Inverted latents after each step, lowest noise first: a list of len(timesteps) tensors (B, C, h, w)."""
    latents = clean_latents
    trajectory = []
    for timestep in timesteps:
        prediction = guided_prediction(
            run_unet, latents, timestep, inverse_scheduler, conditional, unconditional, guidance_scale
        )
        latents = inverse_scheduler.step(prediction, timestep, latents).prev_sample
        trajectory.append(latents)
    return trajectory
