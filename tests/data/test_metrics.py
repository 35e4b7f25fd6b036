"""Background PSNR/SSIM against skimage's reference implementation and hand-checked masked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffedit_batch.data.images import upsample_mask
from diffedit_batch.data.metrics import PSNR_CAP_DB, background_metrics, background_psnr, background_ssim


@pytest.fixture(scope="module")
def pair():
    image = data.astronaut()[::4, ::4]  # 128 x 128 x 3
    noise = np.random.default_rng(0).integers(-25, 26, image.shape)
    return image, np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


# Our SSIM filters in float32 (3-4x cheaper than skimage's float64): it agrees to about 3e-7 on these pictures.
SSIM_FLOAT32 = 1e-6

def test_full_image_matches_skimage(pair):
    a, b = pair
    everything = np.ones(a.shape[:2], bool)
    assert background_psnr(a, b, everything) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    reference = structural_similarity(
        a, b, gaussian_weights=True, use_sample_covariance=False, data_range=255, channel_axis=-1
    )
    assert background_ssim(a, b, everything) == pytest.approx(reference, abs=SSIM_FLOAT32)


def test_grayscale_matches_skimage(pair):
    a, b = pair[0][:, :, 1], pair[1][:, :, 1]
    reference = structural_similarity(a, b, gaussian_weights=True, use_sample_covariance=False, data_range=255)
    assert background_ssim(a, b, np.ones(a.shape, bool)) == pytest.approx(reference, abs=SSIM_FLOAT32)


def test_masked_psnr_ignores_the_edited_region():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[:8] = 0  # the "edit": a huge change inside the mask
    b[8:, :, 0] = 110  # background: channel 0 off by 10 on the lower half
    background = np.zeros((16, 16), bool)
    background[8:] = True
    # Hand check: MSE over the background = (10**2 + 0 + 0) / 3 per pixel.
    expected = 10 * math.log10(255**2 / (100 / 3))
    assert background_psnr(a, b, background) == pytest.approx(expected, abs=1e-12)


def test_masked_ssim_averages_the_map_over_background_away_from_the_border(pair):
    a, b = pair
    b = b.copy()
    b[:, 64:] = 255 - a[:, 64:]  # the edited right half: destroyed
    background = np.zeros(a.shape[:2], bool)
    background[:, :64] = True
    full_map = structural_similarity(
        a, b, gaussian_weights=True, use_sample_covariance=False, data_range=255, channel_axis=-1, full=True
    )[1]
    # Hand-built reference: skimage's SSIM map, averaged over background pixels 5+ px inside the border.
    expected = full_map[5:-5, 5:64].mean()
    assert background_ssim(a, b, background) == pytest.approx(expected, abs=SSIM_FLOAT32)
    untouched = structural_similarity(
        a[:, :64], pair[1][:, :64], gaussian_weights=True, use_sample_covariance=False, data_range=255, channel_axis=-1
    )
    assert background_ssim(a, b, background) < untouched  # windows at the mask edge see the edit


def test_identical_background_caps_psnr_and_gives_ssim_one(pair):
    a = pair[0]
    background = np.ones(a.shape[:2], bool)
    assert background_psnr(a, a, background) == PSNR_CAP_DB
    assert background_ssim(a, a, background) == pytest.approx(1.0)


def test_no_background_gives_none(pair):
    a, b = pair
    mask = np.ones((16, 16), np.uint8)  # latent-res mask covering everything
    assert background_metrics(a, b, mask) == (None, None)


def test_mask_is_upsampled_nearest_like_the_mask_png():
    from io import BytesIO

    from PIL import Image

    from diffedit_batch.data.images import mask_to_png

    mask = (np.random.default_rng(1).random((6, 9)) > 0.5).astype(np.uint8)
    for size in [(72, 48), (50, 31)]:
        png = np.array(Image.open(BytesIO(mask_to_png(mask, size)))) > 0
        assert np.array_equal(upsample_mask(mask, size), png)


def test_background_metrics_uses_only_pixels_outside_the_mask(pair):
    a = pair[0][:64, :64]
    b = a.copy()
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1  # the top half of a 64 x 64 image
    b[:32] = 0
    psnr, ssim = background_metrics(a, b, mask)
    assert psnr == PSNR_CAP_DB
    assert 0.5 < ssim < 1.0  # background windows touching the edited half lose some similarity
