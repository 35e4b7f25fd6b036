"""Named EditSettings: the exact reference settings, and faster ones that trade some fidelity for speed.

UNet sample-evaluations per edit (one target, defaults otherwise), with K = steps * inpaint_strength:
    exact    mask 2*10 + inversion 2*40 + edit 2*40 = 180  (the reference itself spends 200)
    fast     mask 2*5  + inversion 1*40 + edit 2*40 = 130  (inversion without guidance, half the mask maps)
    fastest  mask 2*5  + inversion 1*20 + edit 2*20 =  70  (and 25 steps)
`benchmarks/preset_quality.py` measures what each costs in mask agreement and edit difference.
"""

from __future__ import annotations

from .settings import EditSettings

PRESETS: dict[str, EditSettings] = {
    "exact": EditSettings(),
    # Unguided DDIM inversion is what the paper does and is close to exact in practice; halving the mask
    # maps makes the mask noisier at its edges.
    "fast": EditSettings(invert_guidance_scale=1.0, num_maps_per_mask=5),
    "fastest": EditSettings(invert_guidance_scale=1.0, num_maps_per_mask=5, num_inference_steps=25),
}


def preset(name: str) -> EditSettings:
    """The settings of a named preset; raises ValueError naming the known presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
