"""Shared fixtures: one tiny random Stable Diffusion per test session, saved and loaded back."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.s3_server import s3_server  # noqa: F401  (session fixture shared by all test packages)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Model folders' digests (edit-mode runs) are cached per test session, not in the home folder.
os.environ.setdefault("DIFFEDIT_BATCH_DIGEST_CACHE",
                      os.path.join(tempfile.gettempdir(), f"diffedit-test-digests-{os.getpid()}.json"))
# The tiny models gain nothing from intra-op threads, and on a 2-core machine shared with Ray workers (or another
# test run) OpenMP's spinning threads oversubscribe the cores: one UNet call went from 5 ms to 200 ms.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Stable Diffusion in the diffusers folder layout (built once per session)."""
    from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    """The tiny model loaded into one DiffEditEngine on the CPU, shared by the engine and recipe tests."""
    import torch

    from diffedit_batch import DiffEditEngine

    return DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu", dtype=torch.float32, max_unet_batch=64)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """A tiny random SDXL in the diffusers folder layout of stable-diffusion-xl-base-1.0 (built once per session)."""
    from diffedit_batch.testing.tiny_sdxl import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def sdxl_engine(tiny_sdxl_dir):
    """The tiny SDXL loaded into one DiffEditEngine on the CPU."""
    import torch

    from diffedit_batch import DiffEditEngine

    return DiffEditEngine.from_pretrained(str(tiny_sdxl_dir), device="cpu", dtype=torch.float32, max_unet_batch=64)


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    """A tiny random SD 3.5 in the diffusers folder layout of stable-diffusion-3.5-medium (built once per session)."""
    from diffedit_batch.testing.tiny_sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny random FLUX.1-dev (guidance embedding) in the folder layout of FLUX.1-dev (built once per session)."""
    from diffedit_batch.testing.tiny_flux import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(scope="session")
def tiny_flux_schnell_dir(tmp_path_factory):
    """A tiny random FLUX.1-schnell-style model: no guidance embedding, schnell's fixed-shift scheduler."""
    from diffedit_batch.testing.tiny_flux import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-schnell", guidance_embeds=False)


def _flow_engine(folder):
    import torch

    from diffedit_batch import DiffEditEngine

    return DiffEditEngine.from_pretrained(str(folder), device="cpu", dtype=torch.float32, max_unet_batch=64)


@pytest.fixture(scope="session")
def sd3_engine(tiny_sd3_dir):
    return _flow_engine(tiny_sd3_dir)


@pytest.fixture(scope="session")
def flux_engine(tiny_flux_dir):
    return _flow_engine(tiny_flux_dir)


@pytest.fixture(scope="session")
def flux_schnell_engine(tiny_flux_schnell_dir):
    return _flow_engine(tiny_flux_schnell_dir)


@pytest.fixture(scope="session")
def ray_local(s3_server):  # noqa: F811 (the fixture imported above)
    """One in-process Ray for the whole session, started after the S3 server so that its workers inherit the
    server's (fake) credentials from the environment."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_helper_models(tiny_model_dir):
    """Tiny random Flan-T5 and BLIP beside the tiny Stable Diffusion (as `make-tiny-model --all` lays them out)."""
    from diffedit_batch.testing.tiny_recipe import build_tiny_blip, build_tiny_flan_t5

    return build_tiny_flan_t5(tiny_model_dir.parent / "tiny-flan-t5"), build_tiny_blip(tiny_model_dir.parent / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_config_overrides(tiny_model_dir, tiny_helper_models):
    """--set overrides that point configs/tiny.yaml at the session's tiny models."""
    flan_t5, blip = tiny_helper_models
    return [f"model.pretrained={tiny_model_dir}", f"concepts.model={flan_t5}", f"captions.model={blip}"]


@pytest.fixture
def transformers_warnings():
    """What transformers logs during the test. Its library logger writes to the stderr it found at import and does
    not propagate, so neither capfd nor caplog sees it: a handler of our own does."""
    import logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
