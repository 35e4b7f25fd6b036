"""The rectified-flow Euler update, with its step sizes computed on the host once per walk.

As `FlowMatchEulerDiscreteScheduler.step` (deterministic): x_{s'} = x_s + (s' - s) * v, the sample in float32, the
result in the model output's dtype. Here the sigmas and timesteps come from the scheduler after `set_timesteps` (the
family calls it as its pipeline does: the shift is never recomputed), and each walk's step sizes are float32
tensors moved to the device once, indexed with a Python int: no host sync a step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["FlowWalk", "flow_schedule", "forward_flow_walk", "inverse_flow_walk"]


@dataclass(frozen=True)
class FlowWalk:
    """One Euler walk on the device: the model's timestep input and the step size s' - s of each step."""

    timesteps: torch.Tensor  # (steps,) float32: sigma * num_train_timesteps of the step's input level
    deltas: torch.Tensor  # (steps,) float32: sigma of the level the step goes to, minus the input's

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def step(self, index: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The sample after step `index`, from the model's velocity at it."""
        return (sample.to(torch.float32) + self.deltas[index] * model_output).to(model_output.dtype)


def flow_schedule(scheduler, set_timesteps: Callable, num_inference_steps: int,
                  latent_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas (N + 1,) ending at 0, timesteps (N,)) of `scheduler` (a private copy) after `set_timesteps(scheduler,
    N, latent_shape)`, float32 on the host."""
    scheduler = copy.deepcopy(scheduler)
    set_timesteps(scheduler, num_inference_steps, latent_shape)
    sigmas = scheduler.sigmas.to("cpu", torch.float32)
    timesteps = scheduler.timesteps.to("cpu", torch.float32)
    if len(timesteps) != num_inference_steps or len(sigmas) != num_inference_steps + 1:
        raise ValueError(f"the scheduler made {len(timesteps)} timesteps for {num_inference_steps} steps")
    return sigmas, timesteps


def forward_flow_walk(sigmas: torch.Tensor, timesteps: torch.Tensor, start: int, device) -> FlowWalk:
    """Denoising from sigma_start to 0: step i (i = start .. N-1) at timesteps[i], by sigma_{i+1} - sigma_i."""
    n = len(timesteps)
    deltas = torch.stack([sigmas[i + 1] - sigmas[i] for i in range(start, n)])
    return FlowWalk(timesteps[start:].to(device), deltas.to(device))


def inverse_flow_walk(sigmas: torch.Tensor, timesteps: torch.Tensor, start: int, device) -> FlowWalk:
    """Reverse Euler from sigma_N = 0 up to sigma_start, lowest noise first: x_{sigma_j} = x_{sigma_{j+1}} +
    (sigma_j - sigma_{j+1}) v(x_{sigma_{j+1}}, sigma_{j+1}), the first call at sigma = 0 (timestep 0)."""
    n = len(timesteps)
    every = torch.cat([timesteps, torch.zeros(1, dtype=timesteps.dtype)])  # the timestep of sigma_N = 0
    levels = range(n - 1, start - 1, -1)  # j: the level each step goes to
    deltas = torch.stack([sigmas[j] - sigmas[j + 1] for j in levels])
    inputs = torch.stack([every[j + 1] for j in levels])
    return FlowWalk(inputs.to(device), deltas.to(device))
