"""Which timesteps each DiffEdit stage visits, exactly as the reference slices the DDIM schedules, and their DDIM
walks (`ddim.DDIMSchedule`), built on the host once per (steps, strength) and kept."""

from __future__ import annotations

import copy
import inspect

from .ddim import DDIMSchedule, forward_schedule, inverse_schedule


def inverse_scheduler_from(scheduler_config):
    """DDIMInverseScheduler on the denoising schedule's config, as the DiffEdit guide builds it, without the keys it
    does not take (SD checkpoints' `skip_prk_steps`, ...): diffusers would ignore them anyway, with a warning."""
    from diffusers import DDIMInverseScheduler

    accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters
    config = {key: value for key, value in dict(scheduler_config).items() if key in accepted or key.startswith("_")}
    return DDIMInverseScheduler.from_config(config)


def forward_timesteps(scheduler, num_inference_steps: int, strength: float) -> list[int]:
    """The last `int(num_inference_steps * strength)` timesteps of the denoising schedule (high noise first).
    Sets `scheduler` to `num_inference_steps` (pass a private copy)."""
    scheduler.set_timesteps(num_inference_steps)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - kept, 0)
    return scheduler.timesteps[start * scheduler.order :].tolist()


def inverse_timesteps(inverse_scheduler, num_inference_steps: int, strength: float) -> list[int]:
    """The first `int(num_inference_steps * strength)` timesteps of the inversion schedule (low noise first).
    Sets `inverse_scheduler` to `num_inference_steps` (pass a private copy)."""
    inverse_scheduler.set_timesteps(num_inference_steps)
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - kept, 0)
    timesteps = inverse_scheduler.timesteps.tolist()
    return timesteps if start == 0 else timesteps[:-start]


def private_copy(scheduler):
    """Schedulers keep per-run state (their timesteps): each schedule is made from a copy of its own."""
    return copy.deepcopy(scheduler)


class Schedules:
    """The DDIM walks of an engine, by (steps, strength), made once each and kept on the device."""

    def __init__(self, scheduler, inverse_scheduler, device):
        self.scheduler, self.inverse_scheduler, self.device = scheduler, inverse_scheduler, device
        self._walks: dict[tuple, DDIMSchedule] = {}
        self._mask_timesteps: dict[tuple, int] = {}

    def denoise(self, num_inference_steps: int, strength: float) -> DDIMSchedule:
        key = ("denoise", num_inference_steps, strength)
        if key not in self._walks:
            scheduler = private_copy(self.scheduler)
            timesteps = forward_timesteps(scheduler, num_inference_steps, strength)
            self._walks[key] = forward_schedule(scheduler, timesteps, self.device)
        return self._walks[key]

    def invert(self, num_inference_steps: int, strength: float) -> DDIMSchedule:
        key = ("invert", num_inference_steps, strength)
        if key not in self._walks:
            scheduler = private_copy(self.inverse_scheduler)
            timesteps = inverse_timesteps(scheduler, num_inference_steps, strength)
            self._walks[key] = inverse_schedule(scheduler, timesteps, self.device)
        return self._walks[key]

    def mask_timestep(self, num_inference_steps: int, strength: float) -> int:
        """The timestep at which the mask is estimated: the first of the partial denoising schedule."""
        key = ("mask", num_inference_steps, strength)
        if key not in self._mask_timesteps:
            self._mask_timesteps[key] = forward_timesteps(private_copy(self.scheduler), num_inference_steps, strength)[0]
        return self._mask_timesteps[key]
