"""A compiled UNet compiles once per latent size: padded static batches keep its input shapes fixed."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from diffedit_batch import DiffEditEngine, EditSettings

from .conftest import photo

pytestmark = pytest.mark.slow  # dynamo traces the UNet twice: about 15 s


@pytest.fixture
def compiled_engine(engine):
    torch._dynamo.reset()
    counter = CompileCounter()  # a backend that counts the graphs dynamo hands it and runs them eagerly
    compiled = DiffEditEngine(
        torch.compile(engine.unet, backend=counter, dynamic=False), engine.vae, engine.text_encoder, engine.tokenizer,
        scheduler=engine.scheduler, max_unet_batch=4, static_unet_batches=True,
    )
    yield compiled, counter
    torch._dynamo.reset()


def test_compiled_unet_compiles_once_per_latent_size(compiled_engine, engine):
    compiled, counter = compiled_engine
    settings = EditSettings(num_inference_steps=3, num_maps_per_mask=1)
    # Calls of 1, 3 and 5 rows over two picture sizes: batch sizes 1..5 reach the UNet, as do several slices
    # at different storage offsets; padding makes every UNet input (4, C, h, w).
    for rows, size in ((1, (32, 32)), (3, (32, 48)), (5, (32, 32)), (2, (32, 48))):
        images = [photo(*size, seed) for seed in range(rows)]
        compiled.edit(images, ["a cat"] * rows, ["a dog"] * rows, list(range(rows)), settings)
    latent_sizes = {(4, 4), (6, 4)}  # (h, w): photo() takes width, height
    assert compiled.run_unet.shapes == {(4, 4, h, w) for h, w in latent_sizes}
    assert counter.frame_count == len(latent_sizes)

    # Padding changes no row: the compiled engine's output equals the eager engine's.
    images = [photo(32, 48, seed) for seed in range(3)]
    expected = engine.edit(images, ["a cat"] * 3, ["a dog"] * 3, [0, 1, 2], settings)
    actual = compiled.edit(images, ["a cat"] * 3, ["a dog"] * 3, [0, 1, 2], settings)
    for a, b in zip(actual, expected):
        assert torch.allclose(torch.as_tensor(list(a.image.getdata()), dtype=torch.float32),
                              torch.as_tensor(list(b.image.getdata()), dtype=torch.float32), atol=2)
    assert counter.frame_count == len(latent_sizes)
