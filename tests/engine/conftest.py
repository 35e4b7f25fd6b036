from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from diffedit_batch.engine.reference import reference_edit, reference_pipeline  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    from diffedit_batch import DiffEditEngine

    return DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu", dtype=torch.float32, max_unet_batch=64)


@pytest.fixture(scope="session")
def reference(engine):
    """The deprecated diffusers pipeline over the same components, scheduled as the DiffEdit guide sets it."""
    return reference_pipeline(engine)


def photo(width: int, height: int, seed: int) -> PIL.Image.Image:
    """A smooth synthetic picture (gradients and a disc), so resizing behaves like on a photo."""
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
