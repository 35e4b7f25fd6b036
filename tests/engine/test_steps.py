"""The DDIM steps: equal to diffusers' schedulers, with no host sync inside an inversion or denoising step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffedit_batch import EditSettings
from diffedit_batch.engine.ddim import forward_schedule, inverse_schedule
from diffedit_batch.engine.denoise import denoise_with_mask
from diffedit_batch.engine.inversion import invert
from diffedit_batch.engine.schedule import forward_timesteps, inverse_timesteps

from .conftest import photo


class HostSyncs(TorchDispatchMode):
    """Counts `aten._local_scalar_dense`: every tensor-to-Python scalar (`.item()`, `bool(t)`, `int(t)`, indexing a
    tensor with a tensor), which on a GPU is a device-to-host sync."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_our_steps_equal_the_schedulers_steps(engine, prediction_type):
    forward = type(engine.scheduler).from_config(engine.scheduler.config, prediction_type=prediction_type)
    inverse = type(engine.inverse_scheduler).from_config(engine.inverse_scheduler.config,
                                                         prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(0)
    sample, output = (torch.randn(2, 4, 4, 4, generator=generator) for _ in range(2))
    timesteps = forward_timesteps(copy.deepcopy(forward), 10, 0.8)
    forward.set_timesteps(10)
    schedule = forward_schedule(forward, timesteps, "cpu")
    for index, timestep in enumerate(timesteps):
        assert torch.equal(schedule.step(index, output, sample), forward.step(output, timestep, sample).prev_sample)
    timesteps = inverse_timesteps(copy.deepcopy(inverse), 10, 0.8)
    inverse.set_timesteps(10)
    schedule = inverse_schedule(inverse, timesteps, "cpu")
    for index, timestep in enumerate(timesteps):
        assert torch.equal(schedule.step(index, output, sample), inverse.step(output, timestep, sample).prev_sample)


def test_no_host_sync_inside_an_inversion_or_denoising_step(engine):
    settings = EditSettings(num_inference_steps=6, num_maps_per_mask=1)
    engine.edit([photo(32, 32, 1)], ["a cat"], ["a dog"], [1], settings)  # builds and keeps the schedules
    inversion = engine.schedules.invert(6, settings.inpaint_strength)
    denoising = engine.schedules.denoise(6, settings.inpaint_strength)
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    text = engine.prompts.encode(["a cat", ""])
    conditional = next(iter(text.values())).conditioning.repeat(2)
    unconditional = list(text.values())[1].conditioning.repeat(2)
    with HostSyncs() as syncs:
        trajectory = invert(engine.run_unet, inversion, latents, conditional, unconditional, 7.5)
        denoise_with_mask(engine.run_unet, denoising, trajectory, latents, torch.ones(2, 1, 4, 4), conditional,
                          unconditional, 7.5, paper_timing=False)
    assert len(trajectory) == len(inversion) == 4 and syncs.count == 0

    # the check can fail: diffusers' own step syncs, as it did inside every step before
    scheduler = copy.deepcopy(engine.scheduler)
    scheduler.set_timesteps(6)
    with HostSyncs() as syncs:
        scheduler.step(latents, scheduler.timesteps[1], latents)
    assert syncs.count > 0


def test_the_inverse_scheduler_takes_only_its_own_keys_and_keeps_the_schedule(caplog):
    """SD checkpoints' scheduler configs carry PNDM keys (`skip_prk_steps`) that DDIMInverseScheduler would warn
    about on every actor; ours drops them and builds the same schedule."""
    import logging

    from diffusers import DDIMInverseScheduler

    from diffedit_batch.engine.schedule import inverse_scheduler_from

    config = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,  # SD-2.1's, as saved
              "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
              "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
              "steps_offset": 1, "trained_betas": None}
    with caplog.at_level(logging.WARNING):
        ours = inverse_scheduler_from(config)
    assert not [r for r in caplog.records if "skip_prk_steps" in r.getMessage()]
    assert "skip_prk_steps" not in ours.config and ours.config.prediction_type == "v_prediction"
    theirs = DDIMInverseScheduler.from_config(config)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    assert torch.equal(ours.timesteps, theirs.timesteps) and torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
