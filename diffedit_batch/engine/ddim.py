"""The DDIM update, with its coefficients computed on the host once per schedule.

diffusers' `DDIMScheduler.step` and `DDIMInverseScheduler.step` look up `alphas_cumprod[timestep]` with the
timestep tensor and compare it with 0 on every step: with timesteps on a GPU that is several device-to-host syncs a
step, which stalls the GPU behind the host and rules out CUDA graphs. Here every coefficient of a schedule is a
float32 tensor built on the host the way the schedulers build them (the same values, the same operations, so the
results equal theirs), moved to the device once; a step indexes them with a Python int and does tensor arithmetic
only: no host sync. Only eta = 0 (deterministic DDIM) is used, as DiffEdit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["DDIMSchedule", "forward_schedule", "inverse_schedule"]


@dataclass(frozen=True)
class DDIMSchedule:
    """One DDIM walk: the UNet's timestep input and the update's coefficients for each step, on the device."""

    timesteps: torch.Tensor  # (steps,) int64: what the UNet is called with at each step
    sqrt_alpha: torch.Tensor  # (steps,) float32: alpha_prod_t ** 0.5 of the step's input timestep
    sqrt_beta: torch.Tensor  # (1 - alpha_prod_t) ** 0.5
    sqrt_alpha_next: torch.Tensor  # alpha_prod ** 0.5 of the timestep the step moves to
    sqrt_beta_next: torch.Tensor  # (1 - that alpha_prod) ** 0.5
    prediction_type: str
    clip_sample_range: float | None  # clamp the predicted clean sample to +- this (config.clip_sample)
    threshold: Callable[[torch.Tensor], torch.Tensor] | None  # dynamic thresholding (config.thresholding)

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def step(self, index: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The sample after step `index`, from the model's output at it: tensor arithmetic only."""
        sqrt_alpha, sqrt_beta = self.sqrt_alpha[index], self.sqrt_beta[index]
        if self.prediction_type == "epsilon":
            original = (sample - sqrt_beta * model_output) / sqrt_alpha
            epsilon = model_output
        elif self.prediction_type == "sample":
            original = model_output
            epsilon = (sample - sqrt_alpha * original) / sqrt_beta
        else:  # v_prediction
            original = sqrt_alpha * sample - sqrt_beta * model_output
            epsilon = sqrt_alpha * model_output + sqrt_beta * sample
        if self.threshold is not None:
            original = self.threshold(original)
        elif self.clip_sample_range is not None:
            original = original.clamp(-self.clip_sample_range, self.clip_sample_range)
        return self.sqrt_alpha_next[index] * original + self.sqrt_beta_next[index] * epsilon


def _check(scheduler) -> None:
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon, sample or v_prediction, got {kind!r}")


def _schedule(scheduler, timesteps: list[int], current: list[torch.Tensor], following: list[torch.Tensor],
              device, thresholding: bool) -> DDIMSchedule:
    _check(scheduler)
    current_alpha = torch.stack(current).to(torch.float32)
    following_alpha = torch.stack(following).to(torch.float32)
    beta = 1 - current_alpha
    config = scheduler.config

    def place(values: torch.Tensor) -> torch.Tensor:
        return values.to(device)

    return DDIMSchedule(
        timesteps=torch.tensor(timesteps, dtype=torch.int64, device=device),
        sqrt_alpha=place(current_alpha ** 0.5),
        sqrt_beta=place(beta ** 0.5),
        sqrt_alpha_next=place(following_alpha ** 0.5),
        sqrt_beta_next=place((1 - following_alpha) ** 0.5),
        prediction_type=config.prediction_type,
        clip_sample_range=float(config.clip_sample_range) if config.clip_sample else None,
        threshold=scheduler._threshold_sample if thresholding and getattr(config, "thresholding", False) else None,
    )


def forward_schedule(scheduler, timesteps: list[int], device) -> DDIMSchedule:
    """The denoising walk of a `DDIMScheduler` (set to its number of steps) over `timesteps`, high noise first:
    each step goes to `timestep - num_train_timesteps // num_inference_steps` (the final alpha below 0)."""
    ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod
    following = [alphas[t - ratio] if t - ratio >= 0 else scheduler.final_alpha_cumprod for t in timesteps]
    return _schedule(scheduler, timesteps, [alphas[t] for t in timesteps], following, device, thresholding=True)


def inverse_schedule(scheduler, timesteps: list[int], device) -> DDIMSchedule:
    """The inversion walk of a `DDIMInverseScheduler` (set to its number of steps) over `timesteps`, low noise
    first: step t comes from `min(t - num_train_timesteps // num_inference_steps, num_train_timesteps - 1)` (the
    initial alpha below 0) and goes to t."""
    config = scheduler.config
    ratio = config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod
    sources = [min(t - ratio, config.num_train_timesteps - 1) for t in timesteps]
    current = [alphas[s] if s >= 0 else scheduler.initial_alpha_cumprod for s in sources]
    return _schedule(scheduler, timesteps, current, [alphas[t] for t in timesteps], device, thresholding=False)
