"""Synthetic pictures for tests and benchmarks: smooth gradients and a disc, so resizing behaves as on a photo."""

from __future__ import annotations

import numpy as np
import PIL.Image


def synthetic_photo(width: int, height: int, seed: int) -> PIL.Image.Image:
    """A `width` x `height` RGB picture, the same for the same seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, 0.25 * min(width, height)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < r**2).astype(np.float32)
    channels = [
        (x / width) * rng.uniform(80, 255) + disc * rng.uniform(-120, 120),
        (y / height) * rng.uniform(80, 255) + disc * rng.uniform(-120, 120),
        np.full_like(x, rng.uniform(0, 255)) - disc * rng.uniform(0, 100),
    ]
    return PIL.Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))
