"""Which timesteps each DiffEdit stage visits, exactly as the reference slices the DDIM schedules."""

from __future__ import annotations

import copy

import torch


def forward_timesteps(scheduler, num_inference_steps: int, strength: float, device) -> torch.Tensor:
    """The last `int(num_inference_steps * strength)` timesteps of the denoising schedule (high noise first)."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - kept, 0)
    return scheduler.timesteps[start * scheduler.order :]


def inverse_timesteps(inverse_scheduler, num_inference_steps: int, strength: float, device) -> torch.Tensor:
    """The first `int(num_inference_steps * strength)` timesteps of the inversion schedule (low noise first)."""
    inverse_scheduler.set_timesteps(num_inference_steps, device=device)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - kept, 0)
    if start == 0:
        return inverse_scheduler.timesteps
    return inverse_scheduler.timesteps[:-start]


def private_copy(scheduler):
    """Schedulers keep per-run state (timesteps, step index): each run of a stage gets its own copy."""
    return copy.deepcopy(scheduler)
