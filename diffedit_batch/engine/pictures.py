"""A picture's identity by content: equal pictures share their work (one VAE encode, one caption)."""

from __future__ import annotations

import hashlib

import numpy as np
import PIL.Image


def picture_key(image: PIL.Image.Image) -> str:
    """A digest of the picture's RGB pixels and size: two pictures get the same key exactly when they are equal."""
    rgb = np.asarray(image.convert("RGB"))
    digest = hashlib.blake2b(rgb.tobytes(), digest_size=16)
    digest.update(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    return digest.hexdigest()
