"""Per-edit quality metrics of the background: what DiffEdit should have left alone. Numpy, no scipy.

DiffEdit promises to change the masked region and keep the rest. These metrics measure the rest:

- ``background_psnr``: PSNR (dB) between the input and the edit over the background pixels (mask 0),
  all three channels, data range 255. Identical backgrounds would be +inf; values are capped at
  ``PSNR_CAP_DB`` (100 dB) so the column stays finite and sortable.
- ``background_ssim``: SSIM of Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
  K2 0.03, population covariances: skimage's ``structural_similarity(gaussian_weights=True,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``. It is computed per RGB channel
  (not on luminance, so a colour shift in the background counts) over the whole image, and the SSIM map
  is averaged over background pixels only, away from the image border (the 5-pixel border skimage
  crops). Windows near the mask's edge still see some edited pixels: the score is "how well the
  surroundings of each background pixel are preserved", which is what a viewer perceives.

Both are computed in float32 (3-4x cheaper than float64, and within 1e-4 of skimage's float64 figures) with
float64 sums. Both are None when the mask covers the whole image (no background to measure). The mask comes at
latent resolution and is upsampled nearest-neighbour to the image by ``images.upsample_mask``, as the
written mask PNG is.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from .images import upsample_mask

__all__ = [
    "METRIC_FIELDS",
    "PSNR_CAP_DB",
    "background_metrics",
    "background_psnr",
    "background_ssim",
]

PSNR_CAP_DB = 100.0

# The result-manifest columns these metrics (and the optional CLIP scores) fill; null where not measured.
METRIC_FIELDS = (
    pa.field("background_psnr", pa.float64()),
    pa.field("background_ssim", pa.float64()),
    pa.field("clip_target_score", pa.float64()),  # cosine similarity of the edit and the target prompt
    pa.field("clip_source_score", pa.float64()),  # cosine similarity of the input and the source prompt
    # a candidate's InstructPix2Pix scores (recipe.clip_score): the change of image embeddings (edit - input) against
    # the change of text embeddings (target - source), and the input against the edit
    pa.field("clip_directional", pa.float64()),
    pa.field("clip_image", pa.float64()),
    # CLIP's zero-shot probability of the row's class among all classes of its label column (prompts.label_template)
    pa.field("clip_label", pa.float64()),
)

_SIGMA = 1.5
_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's radius: int(truncate * sigma + 0.5) = 5, an 11-tap window
_K1, _K2 = 0.01, 0.03


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image must be (height, width) or (height, width, channels), got shape {image.shape}")
    return image.astype(np.float32)


def _check_pair(a: np.ndarray, b: np.ndarray, background: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if background.shape != a.shape[:2]:
        raise ValueError(f"background mask shape {background.shape} does not match the image's {a.shape[:2]}")


def background_psnr(a: np.ndarray, b: np.ndarray, background: np.ndarray, data_range: float = 255.0) -> float | None:
    """PSNR in dB of ``a`` vs ``b`` (H, W[, C]) over pixels where ``background`` (H, W) is True.

    Capped at ``PSNR_CAP_DB`` (identical backgrounds give the cap); None when there is no background pixel.
    """
    a, b, background = _as_float(a), _as_float(b), np.asarray(background, bool)
    _check_pair(a, b, background)
    if not background.any():
        return None
    squared = np.square(a - b).sum(axis=2, dtype=np.float64)  # per pixel, over channels
    mse = float(squared[background].sum() / (np.count_nonzero(background) * a.shape[2]))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range**2 / mse))


def _gaussian_window() -> np.ndarray:
    radius = int(_TRUNCATE * _SIGMA + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def _blur_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """A symmetric 1-D filter along `axis` with scipy.ndimage's default 'reflect' (half-sample symmetric) edges:
    the two taps of each weight share a multiply, and the sums accumulate in place."""
    radius = len(weights) // 2
    length = image.shape[axis]
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="symmetric")

    def taps(offset: int) -> np.ndarray:
        return padded[(slice(None),) * axis + (slice(offset, offset + length),)]

    out = taps(radius) * weights[radius]
    pair = np.empty_like(out)
    for k in range(radius):
        np.add(taps(k), taps(2 * radius - k), out=pair)
        pair *= weights[k]
        out += pair
    return out


def _filter(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with scipy.ndimage's default 'reflect' (half-sample symmetric) edges."""
    return _blur_axis(_blur_axis(image, weights, 0), weights, 1)


def _ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Per-pixel, per-channel SSIM (H, W, C). In-place arithmetic: at 768 px each temporary is 7 MB."""
    weights = _gaussian_window()
    mu_a, mu_b = _filter(a, weights), _filter(b, weights)
    mu_ab = mu_a * mu_b
    cov = _filter(a * b, weights)
    cov -= mu_ab  # cov(a, b)
    variances = _filter(a * a, weights)
    variances += _filter(b * b, weights)
    np.square(mu_a, out=mu_a)
    np.square(mu_b, out=mu_b)
    means = mu_a
    means += mu_b  # mu_a^2 + mu_b^2
    variances -= means  # var_a + var_b
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    numerator = mu_ab
    numerator *= 2
    numerator += c1
    cov *= 2
    cov += c2
    numerator *= cov
    means += c1
    variances += c2
    means *= variances
    numerator /= means
    return numerator


def background_ssim(a: np.ndarray, b: np.ndarray, background: np.ndarray, data_range: float = 255.0) -> float | None:
    """Mean SSIM of ``a`` vs ``b`` (H, W[, C]) over background pixels (True in ``background``, (H, W)).

    The map is averaged over background pixels at least 5 px from the border (all background pixels
    when the image is too small for a border); None when no background pixel is left.
    """
    a, b, background = _as_float(a), _as_float(b), np.asarray(background, bool)
    _check_pair(a, b, background)
    crop = len(_gaussian_window()) // 2
    if min(background.shape) > 2 * crop:
        inner = np.zeros_like(background)
        inner[crop:-crop, crop:-crop] = True
        background = background & inner
    if not background.any():
        return None
    return float(np.mean(_ssim_map(a, b, data_range)[background], dtype=np.float64))


def background_metrics(
    input_rgb: np.ndarray, edited_rgb: np.ndarray, mask: np.ndarray
) -> tuple[float | None, float | None]:
    """(PSNR dB, SSIM) of the background of an edit: uint8 (H, W, 3) input and edit, latent-res mask (h, w)."""
    height, width = np.asarray(input_rgb).shape[:2]
    background = ~upsample_mask(mask, (width, height))
    return background_psnr(input_rgb, edited_rgb, background), background_ssim(input_rgb, edited_rgb, background)
