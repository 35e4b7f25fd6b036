"""The sampler seam: how a model family is noised and walked, apart from the DiffEdit math.

DiffEdit's mask, inversion and edit (`engine`, `mask`, `inversion`, `denoise`) are written once against four things
a sampler gives (as ComfyUI's samplers only ever see a model's `model_sampling`: EPS, V_PREDICTION, CONST):
- `mask_level(steps, strength, shape)` and `noised(latents, noise, level)`: noise a clean latent to the level at
  which the mask is estimated (the first step of the partial schedule);
- `model_timestep(level)`: what the model is called with at that level (the family scales it further if it must);
- `denoise(steps, strength, shape)` / `invert(...)`: a `Walk` of steps s -> s', each with the model's timestep
  input and an update `step(index, model_output, sample)`, high noise first / low noise first.
Two samplers exist: DDIM on an epsilon- or v-prediction model (Stable Diffusion 1.x/2.x, SDXL: `ddim`,
`schedule`) and rectified-flow Euler on a velocity model (SD3, FLUX.1: `flow`). Each family chooses its sampler
(`families`); the engine never learns which one it walks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .flow import FlowWalk, flow_schedule, inverse_flow_walk, forward_flow_walk
from .mask import noised_latents
from .schedule import Schedules

__all__ = ["DDIMSampler", "FlowEulerSampler", "NoiseLevel", "Sampler", "Walk"]


class Walk(Protocol):
    """Steps of one walk: `timesteps[i]` is the model's timestep input at step i (before the family's scaling)."""

    timesteps: torch.Tensor

    def __len__(self) -> int: ...

    def step(self, index: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class NoiseLevel:
    """A noise level of the schedule: the model's timestep input there (a Python number, exact for float32) and,
    on a flow model, sigma."""

    timestep: float | int
    sigma: float | None = None


class Sampler(Protocol):
    reference_blends_late: bool  # the reference this sampler matches blends one step late (see denoise.blend_index)

    def mask_level(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> NoiseLevel: ...

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, level: NoiseLevel) -> torch.Tensor: ...

    def model_timestep(self, level: NoiseLevel) -> torch.Tensor: ...

    def denoise(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk: ...

    def invert(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk: ...


class DDIMSampler:
    """Deterministic DDIM (eta 0) over the model's training schedule, and DDIM inversion, sliced exactly as the
    deprecated DiffEdit pipeline slices them (`schedule`). The latent size changes nothing."""

    reference_blends_late = True

    def __init__(self, scheduler, inverse_scheduler, device):
        self.scheduler, self.inverse_scheduler = scheduler, inverse_scheduler
        self.schedules = Schedules(scheduler, inverse_scheduler, device)
        self.device = device

    def mask_level(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> NoiseLevel:
        return NoiseLevel(int(self.schedules.mask_timestep(num_inference_steps, strength)))

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        # add_noise only reads the training schedule.
        return noised_latents(latents, noise, self.scheduler, torch.tensor(level.timestep, device=self.device))

    def model_timestep(self, level: NoiseLevel) -> torch.Tensor:
        return torch.tensor(level.timestep, device=self.device)

    def denoise(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk:
        return self.schedules.denoise(num_inference_steps, strength)

    def invert(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk:
        return self.schedules.invert(num_inference_steps, strength)


class FlowEulerSampler:
    """Rectified-flow Euler (x_s = (1 - s) z + s noise, the model predicts v = noise - z, a step is
    x_s' = x_s + (s' - s) v) on the sigmas of a `FlowMatchEulerDiscreteScheduler` set as the model's own pipeline
    sets it (`set_timesteps(scheduler, steps, latent_shape)`, the family's: SD3's shift, FLUX.1's `mu` from the
    packed sequence length). The inversion is reverse Euler on the same grid, so a lower strength's inversion is a
    prefix of a higher one's, as with DDIM. There is no reference whose late blending must be copied: the edit
    always blends the inverted latent of each step's output level (the paper's timing)."""

    reference_blends_late = False

    def __init__(self, scheduler, set_timesteps: Callable, device):
        self.scheduler = scheduler
        self.set_timesteps = set_timesteps
        self.device = device
        self._schedules: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._walks: dict[tuple, FlowWalk] = {}

    def _schedule(self, num_inference_steps: int, latent_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas (N + 1,), timesteps (N,)) on the host, float32, as the scheduler holds them."""
        key = (num_inference_steps, tuple(latent_shape[-2:]))
        if key not in self._schedules:
            self._schedules[key] = flow_schedule(self.scheduler, self.set_timesteps, num_inference_steps, latent_shape)
        return self._schedules[key]

    @staticmethod
    def _start(num_inference_steps: int, strength: float) -> int:
        return num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)

    def mask_level(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> NoiseLevel:
        sigmas, timesteps = self._schedule(num_inference_steps, latent_shape)
        k = self._start(num_inference_steps, strength)
        return NoiseLevel(float(timesteps[k]), float(sigmas[k]))

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        # As FlowMatchEulerDiscreteScheduler.scale_noise: sigma * noise + (1 - sigma) * sample, sigma in float32.
        sigma = torch.tensor(level.sigma, dtype=torch.float32, device=self.device)
        return sigma * noise + (1.0 - sigma) * latents

    def model_timestep(self, level: NoiseLevel) -> torch.Tensor:
        return torch.tensor(level.timestep, dtype=torch.float32, device=self.device)

    def denoise(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk:
        key = ("denoise", num_inference_steps, strength, tuple(latent_shape[-2:]))
        if key not in self._walks:
            sigmas, timesteps = self._schedule(num_inference_steps, latent_shape)
            self._walks[key] = forward_flow_walk(sigmas, timesteps, self._start(num_inference_steps, strength),
                                                 self.device)
        return self._walks[key]

    def invert(self, num_inference_steps: int, strength: float, latent_shape: tuple) -> Walk:
        key = ("invert", num_inference_steps, strength, tuple(latent_shape[-2:]))
        if key not in self._walks:
            sigmas, timesteps = self._schedule(num_inference_steps, latent_shape)
            self._walks[key] = inverse_flow_walk(sigmas, timesteps, self._start(num_inference_steps, strength),
                                                 self.device)
        return self._walks[key]
