"""DiffEdit's mask: where the noise predictions under the source and the target prompt differ.

The reference computes both predictions with classifier-free guidance, but unpacks `encode_prompt`'s
(prompt, negative) pair in swapped order. With its empty negative prompts, the guided difference becomes
(1 - guidance_scale) * (eps_target - eps_source): a constant multiple of the unguided difference, which the
thresholding below divides away. So we evaluate each prompt once, unguided: half the UNet work, the same mask.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def noised_latents(latents: torch.Tensor, noise: torch.Tensor, scheduler, timestep: torch.Tensor) -> torch.Tensor:
    """The mask's `num_maps_per_mask` noisy copies of one image at `timestep` (DDIM's `scale_model_input` is the
    identity)."""
    return scheduler.add_noise(latents, noise, timestep)


def threshold_mask(source_prediction: torch.Tensor, target_prediction: torch.Tensor, ratio: float) -> torch.Tensor:
    """Binary (h, w) mask from two (maps, C, h, w) predictions for one row.

    The mean absolute difference over maps and channels is clamped at `ratio` times its own mean and binarised
    at half the clamp. Each row is thresholded by its own mean (the reference takes one mean over its whole
    batch, so rows batched together there would change each other's masks).
    """
    guidance_map = (target_prediction.float() - source_prediction.float()).abs().mean(dim=(0, 1))
    clamp_magnitude = guidance_map.mean() * ratio
    normalised = guidance_map.clamp(0, clamp_magnitude) / clamp_magnitude
    # NaN (identical predictions: 0 / 0) compares False and yields 1, as in the reference.
    return torch.where(normalised <= 0.5, 0, 1).to(torch.uint8)


def constrain_mask(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """DiffEdit's binary (h, w) mask AND a region constraint of the same shape (nonzero: the edit may change it)."""
    return (mask * (np.asarray(region) != 0)).astype(np.uint8)


def region_key(region: np.ndarray) -> tuple:
    """A key of a region constraint: rows with equal constraints share their final mask."""
    binary = np.ascontiguousarray(np.asarray(region) != 0)
    return (binary.shape, hashlib.blake2b(np.packbits(binary).tobytes(), digest_size=16).hexdigest())
