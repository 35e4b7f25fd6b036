"""EditSettings: the DiffEdit knobs of one `DiffEditEngine.edit` call, validated when built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EditSettings:
    """DiffEdit settings. Defaults are the deprecated diffusers pipeline's, so results match it.

    The two `paper_*` switches select the DiffEdit paper's variants where the diffusers reference departs
    from it; both are off by default (reference parity).
    """

    num_inference_steps: int = field(default=50, metadata={"help": "Steps of the full schedule (DDIM; Euler on SD3 "
                                                                     "and FLUX.1)."})
    inpaint_strength: float = field(
        default=0.8,
        metadata={"help": "Fraction of the schedule that is inverted and re-denoised, in (0, 1]."},
    )
    guidance_scale: float = field(
        default=7.5, metadata={"help": "Classifier-free guidance of the edit (target vs. source as negative); on "
                                        "FLUX.1-dev the guidance embedding of the mask and the edit."}
    )
    invert_guidance_scale: float = field(
        default=7.5,
        metadata={"help": "Classifier-free guidance of the inversion; <= 1 inverts without guidance (half the cost); "
                          "on FLUX.1-dev the inversion's guidance embedding."},
    )
    num_maps_per_mask: int = field(
        default=10, metadata={"help": "Noise draws averaged into the mask."}
    )
    mask_encode_strength: float = field(
        default=0.5, metadata={"help": "Noise level (fraction of the schedule) at which the mask is estimated, in (0, 1]."}
    )
    mask_thresholding_ratio: float = field(
        default=3.0,
        metadata={"help": "The mask map is clamped at this multiple of its mean, then binarised at half the clamp."},
    )
    paper_unconditional_inversion: bool = field(
        default=False,
        metadata={"help": "Invert with the unconditional model (empty prompt, no guidance; FLUX.1-dev: embedding 1), "
                          "as the paper does."},
    )
    paper_blend_timing: bool = field(
        default=False,
        metadata={
            "help": "Blend each denoising step's output with the inverted latent of the same timestep (the clean "
            "latent at the last step), as the paper does; the reference blends one step late. SD3 and FLUX.1 always "
            "blend at the paper's timing: there it changes nothing."
        },
    )

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"EditSettings.{name} must be a positive integer, got {value!r}")

        def number(name: str, low: float | None = None, high: float | None = None, low_open: bool = False) -> None:
            value = getattr(self, name)
            # Finite too: an infinite guidance scale turns every edit black.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"EditSettings.{name} must be a finite number, got {value!r}")
            if low is not None and (value <= low if low_open else value < low):
                bound = f"> {low}" if low_open else f">= {low}"
                raise ValueError(f"EditSettings.{name} must be {bound}, got {value!r}")
            if high is not None and value > high:
                raise ValueError(f"EditSettings.{name} must be <= {high}, got {value!r}")

        positive_int("num_inference_steps")
        positive_int("num_maps_per_mask")
        number("inpaint_strength", 0.0, 1.0, low_open=True)
        number("mask_encode_strength", 0.0, 1.0, low_open=True)
        number("guidance_scale", 0.0)
        number("invert_guidance_scale", 0.0)
        number("mask_thresholding_ratio", 0.0, low_open=True)
        for name in ("paper_unconditional_inversion", "paper_blend_timing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EditSettings.{name} must be true or false, got {getattr(self, name)!r}")
        if int(self.num_inference_steps * self.inpaint_strength) < 1:
            raise ValueError(
                "EditSettings: num_inference_steps * inpaint_strength must be at least 1 step, got "
                f"{self.num_inference_steps} * {self.inpaint_strength}"
            )
        if int(self.num_inference_steps * self.mask_encode_strength) < 1:
            raise ValueError(
                "EditSettings: num_inference_steps * mask_encode_strength must be at least 1 step, got "
                f"{self.num_inference_steps} * {self.mask_encode_strength}"
            )

    @property
    def edit_steps(self) -> int:
        """Number of inversion steps, and of edit denoising steps."""
        return min(int(self.num_inference_steps * self.inpaint_strength), self.num_inference_steps)

    @property
    def inversion_guided(self) -> bool:
        return not self.paper_unconditional_inversion and self.invert_guidance_scale > 1.0

    @property
    def edit_guided(self) -> bool:
        return self.guidance_scale > 1.0

    def replace(self, **changes) -> "EditSettings":
        return dataclasses.replace(self, **changes)
