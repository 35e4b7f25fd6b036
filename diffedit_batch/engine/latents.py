"""Images to latents: preprocessing, one VAE encode per distinct image, seeded latent draws, decoding.

The reference draws the VAE posterior sample and the mask noise from a fresh `torch.Generator` seeded per
call, on the CPU, in the VAE's dtype. We reproduce those exact draws from the posterior's mean and std, so the
image is encoded once however many noise draws (mask maps, inversion) are made from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor

from .pictures import picture_key


@dataclass
class PreparedImage:
    key: str  # picture_key of the input: equal pictures share one encode
    pixels: torch.Tensor  # (1, 3, H, W) in [-1, 1], H and W multiples of the VAE scale factor


@dataclass
class Posterior:
    mean: torch.Tensor  # (1, C, h, w)
    std: torch.Tensor  # (1, C, h, w)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape[1:])


class LatentCodec:
    """Args:
        vae: the diffusers `AutoencoderKL`; its config's `scaling_factor` and (SD3, FLUX.1) `shift_factor` map a
            posterior sample to the denoiser's latents: z = (sample - shift_factor) * scaling_factor.
        pixel_multiple: picture sides are rounded down to a multiple of this (the family's: the VAE factor for
            SD/SDXL, 16 px for SD3 and FLUX.1); default the VAE factor.
    """

    def __init__(self, vae, device: torch.device, max_batch: int = 8, pixel_multiple: int | None = None):
        self.vae = vae
        self.device = device
        self.max_batch = max_batch
        self.scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = vae.config.scaling_factor
        self.shift_factor = getattr(vae.config, "shift_factor", None)
        self.pixel_multiple = pixel_multiple or self.scale_factor
        self.processor = VaeImageProcessor(vae_scale_factor=self.pixel_multiple)

    def prepare(self, image: PIL.Image.Image) -> PreparedImage:
        """Resize down to a multiple of `pixel_multiple` and normalise, as the reference does."""
        if not isinstance(image, PIL.Image.Image):
            raise TypeError(f"images must be PIL images, got {type(image).__name__}")
        width, height = image.size
        if width < self.pixel_multiple or height < self.pixel_multiple:
            cell = "latent cell" if self.pixel_multiple == self.scale_factor else "smallest picture side"
            raise ValueError(
                f"image of {width}x{height} px is smaller than the model's {self.pixel_multiple} px {cell}"
            )
        rgb = image.convert("RGB")
        # Preprocessing is a function of the picture alone, so the input's key stands for the pixels' key.
        return PreparedImage(key=picture_key(rgb), pixels=self.processor.preprocess(rgb))

    @torch.no_grad()
    def encode(self, images: list[PreparedImage]) -> dict[str, Posterior]:
        """One VAE encode per distinct image key, batched by size."""
        distinct: dict[str, PreparedImage] = {}
        for image in images:
            distinct.setdefault(image.key, image)
        by_shape: dict[tuple, list[PreparedImage]] = {}
        for image in distinct.values():
            by_shape.setdefault(tuple(image.pixels.shape), []).append(image)
        posteriors: dict[str, Posterior] = {}
        for group in by_shape.values():
            for start in range(0, len(group), self.max_batch):
                chunk = group[start : start + self.max_batch]
                pixels = torch.cat([image.pixels for image in chunk]).to(self.device, self.vae.dtype)
                dist = self.vae.encode(pixels).latent_dist
                for i, image in enumerate(chunk):
                    posteriors[image.key] = Posterior(dist.mean[i : i + 1], dist.std[i : i + 1])
        return posteriors

    def draw(self, generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
        """A standard normal draw as diffusers' `randn_tensor` makes it with a CPU generator."""
        return torch.randn(shape, generator=generator, device="cpu", dtype=self.vae.dtype).to(self.device)

    def sample(self, posterior: Posterior, standard_normal: torch.Tensor) -> torch.Tensor:
        """A scaled latent sample `scaling_factor * (mean + std * eps - shift_factor)` (no shift on SD/SDXL), one
        per row of `standard_normal`."""
        if self.shift_factor is None:
            return self.scaling_factor * (posterior.mean + posterior.std * standard_normal)
        return (posterior.mean + posterior.std * standard_normal - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image | None]:
        """One picture per latent; None where the latent or its decoded pixels hold NaN or Inf (float16 overflow,
        e.g. SDXL's VAE in half precision), which would otherwise come out as a black or white picture."""
        images: list[PIL.Image.Image | None] = []
        for start in range(0, latents.shape[0], self.max_batch):
            chunk = latents[start : start + self.max_batch]
            latents_in = chunk.to(self.vae.dtype) / self.scaling_factor
            if self.shift_factor is not None:
                latents_in = latents_in + self.shift_factor
            decoded = self.vae.decode(latents_in, return_dict=False)[0]
            finite = (torch.isfinite(chunk).flatten(1).all(1) & torch.isfinite(decoded).flatten(1).all(1)).tolist()
            pictures = self.processor.postprocess(decoded if all(finite) else decoded.nan_to_num(), output_type="pil")
            images.extend(picture if ok else None for picture, ok in zip(pictures, finite))
        return images
