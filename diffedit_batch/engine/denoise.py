"""The edit: guided denoising (the sampler's `Walk`) under the target prompt, the background kept from the inversion."""

from __future__ import annotations

from typing import Sequence

import torch

from .conditioning import Conditioning
from .samplers import Walk
from .inversion import active_rows, guided_prediction
from .denoiser_runner import DenoiserRunner


def blend_index(step: int, steps: int, paper_timing: bool) -> int | None:
    """Which inverted latent (trajectory index, lowest noise first) is blended in after denoising step `step` of a
    `steps`-step walk; None for the clean latent.

    The reference blends the latent of the step's *input* timestep (one step late; the last step gets the t=1
    latent); the paper blends the latent of the step's *output* timestep (the clean latent at the end).
    """
    last = steps - 1
    if not paper_timing:
        return last - step
    return None if step == last else last - step - 1


def denoise_with_mask(
    run_unet: DenoiserRunner,
    schedule: Walk,
    trajectory: list[torch.Tensor],
    clean_latents: torch.Tensor,
    masks: torch.Tensor,
    target: Conditioning,
    negative: Conditioning | None,
    guidance_scale: float | torch.Tensor,
    paper_timing: bool,
    steps_per_row: Sequence[int] | None = None,
) -> torch.Tensor:
    """Denoise from the most-noised inverted latents; `masks` (B, 1, h, w) is 1 where the edit may change.

    `guidance_scale` is one number or a (B,) tensor. With `steps_per_row` (sorted, most first) row i denoises
    only the last steps_per_row[i] steps of `schedule` (its lower inpaint strength), joining the walk from its own
    most-noised inverted latent when its steps begin; `trajectory[m]` must then hold at least the rows with more
    than m steps (what `invert` with the same `steps_per_row` returns). A lower strength's denoising steps are the
    tail of a higher one's (equal timesteps, equal coefficients), and the latent a row blends in at a step has
    the same index in every row's trajectory, so the rows share every UNet call from the moment they join.
    """
    total = len(schedule)
    rows = int(masks.shape[0])
    steps_per_row = list(steps_per_row) if steps_per_row is not None else [total] * rows
    if any(a < b for a, b in zip(steps_per_row, steps_per_row[1:])) or max(steps_per_row) > total:
        raise ValueError("steps_per_row must be sorted (most steps first) and within the schedule")
    if isinstance(guidance_scale, torch.Tensor):
        guidance_scale = guidance_scale.reshape(-1, 1, 1, 1)
    latents = None
    for step in range(total):
        # Rows whose walk has begun: those with at least `total - step` steps, a prefix of the batch.
        active = active_rows(steps_per_row, total - step - 1)
        if active == 0:
            continue
        start = trajectory[total - step - 1]  # each joining row's most-noised inverted latent
        joined = 0 if latents is None else latents.shape[0]
        if active > joined:
            fresh = start[joined:active].clone()
            latents = fresh if latents is None else torch.cat([latents, fresh.to(latents.dtype)])
        scale = guidance_scale[:active] if isinstance(guidance_scale, torch.Tensor) else guidance_scale
        prediction = guided_prediction(
            run_unet, latents, schedule.timesteps[step], target[:active],
            None if negative is None else negative[:active], scale,
        )
        latents = schedule.step(step, prediction, latents)
        index = blend_index(step, total, paper_timing)
        source = clean_latents[:active] if index is None else trajectory[index][:active]
        mask = masks[:active].to(latents.dtype)
        latents = latents * mask + source * (1 - mask)
    return latents
