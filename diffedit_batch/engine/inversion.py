"""Inversion: walk each latent from the clean image up the noise schedule (DDIM inversion, or reverse Euler on a
flow model: the sampler's `Walk`), keeping every step."""

from __future__ import annotations

from typing import Sequence

import torch

from .conditioning import Conditioning
from .samplers import Walk
from .denoiser_runner import DenoiserRunner


def guided_prediction(
    run_unet: DenoiserRunner,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    conditional: Conditioning,
    unconditional: Conditioning | None,
    guidance_scale: float | torch.Tensor,
) -> torch.Tensor:
    """Classifier-free guided model output for a batch; `unconditional=None` means one unguided evaluation.
    `guidance_scale` is one number or a (B, 1, 1, 1) tensor, one scale per sample.
    (DDIM's `scale_model_input` is the identity, so the latents go to the UNet as they are.)"""
    if unconditional is None:
        return run_unet(latents, timestep, conditional)
    prediction = run_unet(torch.cat([latents, latents]), timestep, Conditioning.cat([unconditional, conditional]))
    prediction_unconditional, prediction_text = prediction.chunk(2)
    guided = prediction_unconditional + guidance_scale * (prediction_text - prediction_unconditional)
    # Per-sample scales are float32: the result keeps the UNet's precision, as a Python scale does.
    return guided.to(prediction.dtype)


def active_rows(steps_per_row: Sequence[int], threshold: int) -> int:
    """How many rows of `steps_per_row` (sorted, most steps first) have more than `threshold` steps: those rows
    are a prefix of the batch."""
    return sum(1 for steps in steps_per_row if steps > threshold)


def invert(
    run_unet: DenoiserRunner,
    schedule: Walk,
    clean_latents: torch.Tensor,
    conditional: Conditioning,
    unconditional: Conditioning | None,
    guidance_scale: float,
    steps_per_row: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Inverted latents after each step, lowest noise first: a list of len(schedule) tensors (B_j, C, h, w).

    With `steps_per_row` (sorted, most first; at most len(schedule) each) row i walks only its first
    steps_per_row[i] steps: a lower inpaint strength's inversion is a prefix of a higher one's (the same timesteps
    from the low-noise end), so one walk serves every strength and a row leaves it when its prefix is done. Entry
    j then holds the rows still walking at step j, a prefix of the batch."""
    steps_per_row = list(steps_per_row) if steps_per_row is not None else [len(schedule)] * len(clean_latents)
    if any(a < b for a, b in zip(steps_per_row, steps_per_row[1:])) or max(steps_per_row) > len(schedule):
        raise ValueError("steps_per_row must be sorted (most steps first) and within the schedule")
    latents = clean_latents
    trajectory = []
    for step in range(len(schedule)):
        active = active_rows(steps_per_row, step)
        if active == 0:
            break
        latents = latents[:active]
        prediction = guided_prediction(
            run_unet, latents, schedule.timesteps[step], conditional[:active],
            None if unconditional is None else unconditional[:active], guidance_scale,
        )
        latents = schedule.step(step, prediction, latents)
        trajectory.append(latents)
    return trajectory
