"""DiffEditEngine: batched DiffEdit (mask, invert, edit) on diffusers' models and schedulers.

One call edits many rows, each with its own settings. Work is shared wherever the result cannot differ: one VAE
encode per distinct picture, one text-encoder pass per distinct prompt, one set of mask predictions per (picture,
seed, prompt, mask settings) whatever each row's threshold or region, one inversion per (picture, seed, inversion
prompt, inversion settings) walked to the highest inpaint strength that needs it (a lower strength's inversion is its
prefix), and one denoising walk per latent size and step count, rows of lower strength joining it late. Rows of
equal latent size share denoiser calls, up to `max_unet_batch` samples per call. On SD 1.x/2.x and SDXL each row's
result equals what the deprecated diffusers pipeline gives for that row alone, with its own settings and
`torch.Generator().manual_seed(seed)`; on SD3 and FLUX.1 (rectified flow) the same method is walked by Euler steps
(`samplers`), its edit at a full mask equal to the model's own pipeline. What differs between model families (SD
1.x/2.x, SDXL, SD3, FLUX.1) is behind `families` (conditioning, model call, guidance, sampler); the math here is
the same for all.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import PIL.Image
import torch

from diffedit_batch.seeds import SEED_LIMIT

from .conditioning import Conditioning
from .denoise import denoise_with_mask
from .denoiser_runner import DenoiserRunner
from .families import FLUX, SD, SD3, SDXL, flow_family, unet_family
from .inversion import invert
from .latents import LatentCodec, PreparedImage
from .mask import constrain_mask, region_key, threshold_mask
from .prompts import EncodedPrompt, Prompt, PromptEncoder, prompt_key
from .settings import EditSettings

EMPTY_PROMPT = ""
log = logging.getLogger(__name__)


@dataclass
class EditResult:
    """One row's edit."""

    # RGB, the size the model worked at (input size rounded down to a multiple of 8; of 16 on SD3 and FLUX.1); None
    # when the edit came out NaN or Inf (float16 overflow): there is no picture to show, and the caller must treat
    # the row as failed.
    image: PIL.Image.Image | None
    mask: np.ndarray  # uint8 in {0, 1}, (H / 8, W / 8): 1 where the edit may change the image
    truncated_prompts: tuple[str, ...] = ()  # which of "source", "target", "inversion" were cut to the encoder's limit


@dataclass
class EngineStats:
    """Work counters and stage seconds, cumulative since the engine was built (for benchmarks and logs). The
    `unet_*` counters count the denoiser's calls, a transformer's on SD3 and FLUX.1 (shapes in the unpacked
    (B, C, h, w) latent layout)."""

    unet_calls: int = 0  # denoiser (UNet or transformer) forward calls
    unet_samples: int = 0  # denoiser sample-evaluations (the batch sizes of those calls, summed)
    unet_shapes: set[tuple[int, ...]] = field(default_factory=set)  # distinct denoiser input shapes
    vae_encodes: int = 0
    vae_decodes: int = 0
    text_encodes: int = 0
    edits: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def counters(self) -> dict:
        """The counters as plain values (shapes as sorted lists), e.g. for a run's metadata file."""
        return {"unet_calls": self.unet_calls, "unet_samples": self.unet_samples,
                "unet_shapes": sorted(list(shape) for shape in self.unet_shapes), "vae_encodes": self.vae_encodes,
                "vae_decodes": self.vae_decodes, "text_encodes": self.text_encodes, "edits": self.edits}


@dataclass(frozen=True)
class _Guidance:
    """How the engine's family takes guidance and its sampler blends, as far as a row's keys depend on it."""

    classifier_free: bool  # guidance mixes a conditional and an unconditional call (SD, SDXL, SD3)
    key: Callable[[float], object]  # what the model calls depend on of a stage's scale when it is an input (FLUX.1-dev)
    blends_late: bool  # the sampler's reference blends one step late unless `paper_blend_timing` (DDIM)


@dataclass(frozen=True)
class _Row:
    """One row of a call, as keys of the work it needs: rows with equal keys share that work."""

    index: int
    image: str  # image key
    seed: int
    source: tuple  # prompt keys
    target: tuple
    inversion: tuple  # the inversion's conditioning prompt key (the empty prompt for the paper's inversion)
    settings: EditSettings
    guidance: _Guidance

    @property
    def inversion_scale(self) -> float:
        """The inversion's guidance scale: 1 (unguided) for the paper's unconditional inversion."""
        s = self.settings
        return 1.0 if s.paper_unconditional_inversion else s.invert_guidance_scale

    @property
    def inversion_cfg(self) -> bool:
        return self.guidance.classifier_free and self.settings.inversion_guided

    @property
    def edit_cfg(self) -> bool:
        return self.guidance.classifier_free and self.settings.edit_guided

    @property
    def paper_timing(self) -> bool:
        return self.settings.paper_blend_timing or not self.guidance.blends_late
    region: tuple | None = None  # the row's region constraint's key (`region_key`); None = no constraint

    @property
    def noise_unit(self) -> tuple:
        """The mask's noised latents: the draws depend on the seed and map count, the timestep on the steps."""
        s = self.settings
        return (self.image, self.seed, s.num_inference_steps, s.mask_encode_strength, s.num_maps_per_mask)

    @property
    def mask_guidance(self):
        """The mask's predictions are unguided; a guidance-distilled model still takes the edit's scale."""
        return self.guidance.key(self.settings.guidance_scale)

    @property
    def mask_unit(self) -> tuple:
        """The mask's predictions: thresholding (`mask_thresholding_ratio`) is post-processing, not part of it."""
        return (self.noise_unit, self.source, self.target, self.mask_guidance)

    @property
    def mask_key(self) -> tuple:
        """The final mask: thresholding, then the region constraint (rows share predictions whatever their region)."""
        return (self.mask_unit, self.settings.mask_thresholding_ratio, self.region)

    @property
    def inversion_unit(self) -> tuple:
        """Not the strength: one inversion to the highest strength serves every lower one (its prefix)."""
        s = self.settings
        guidance = s.invert_guidance_scale if self.inversion_cfg else None
        return (self.image, self.seed, self.inversion, s.num_inference_steps, guidance,
                self.guidance.key(self.inversion_scale))

    @property
    def edit_walk(self) -> tuple:
        """Rows that can share one denoising walk: the same step count, guided or not, blend timing."""
        return (self.settings.num_inference_steps, self.edit_cfg, self.paper_timing)

    @property
    def edit_unit(self) -> tuple:
        s = self.settings
        guidance = (self.source, s.guidance_scale) if self.edit_cfg else None
        return (self.inversion_unit, self.mask_key, self.target, guidance, self.guidance.key(s.guidance_scale),
                s.edit_steps, self.edit_walk)


def _by_steps(units: list[tuple], steps: dict[tuple, int]) -> list[tuple]:
    """`units` sorted most steps first (stable), so the units still walking at any step are a prefix."""
    return sorted(units, key=lambda unit: -steps[unit])


class DiffEditEngine:
    """Batched DiffEdit. Pure torch/diffusers: no Ray, files or config here.

    Args:
        unet, vae, text_encoder, tokenizer: Stable Diffusion components (diffusers / transformers modules); for SD3
            and FLUX.1 pass `transformer` instead of `unet`.
        scheduler: denoising scheduler; pass one or use `from_pretrained`. SD/SDXL walk DDIM made from its config;
            SD3/FLUX.1 a `FlowMatchEulerDiscreteScheduler` (made from its config if it is another).
        inverse_scheduler: SD/SDXL's inversion scheduler; defaults to DDIMInverseScheduler built from `scheduler`'s
            config (flow models invert by reverse Euler on the denoising schedule).
        max_unet_batch: most denoiser samples per forward call (bounds activation memory).
        prompt_cache_size: prompt embeddings kept across calls.
        static_unet_batches: every denoiser call has exactly `max_unet_batch` samples (padded), for a compiled model.
        text_encoder_2, tokenizer_2: SDXL's second text encoder (`CLIPTextModelWithProjection`) and tokenizer; with
            them and a UNet the engine drives SDXL (the UNet must take SDXL's `text_time` conditioning), without them
            SD 1.x/2.x. SD3: CLIP-G; FLUX.1: T5.
        force_zeros_for_empty_prompt: SDXL's `model_index.json` flag: guidance's unconditional side is zeros.
        transformer: an `SD3Transformer2DModel` (SD 3/3.5: also text_encoder_3 (T5) and tokenizer_3) or a
            `FluxTransformer2DModel` (FLUX.1-dev with a guidance embedding, -schnell without).
        max_sequence_length: T5's token limit on SD3 (default 256) and FLUX.1 (default 512), as their pipelines'.
    """

    def __init__(
        self,
        unet=None,
        vae=None,
        text_encoder=None,
        tokenizer=None,
        scheduler=None,
        inverse_scheduler=None,
        max_unet_batch: int = 16,
        prompt_cache_size: int = 256,
        static_unet_batches: bool = False,
        text_encoder_2=None,
        tokenizer_2=None,
        force_zeros_for_empty_prompt: bool = True,
        transformer=None,
        text_encoder_3=None,
        tokenizer_3=None,
        max_sequence_length: int | None = None,
    ):
        if scheduler is None:
            raise ValueError("scheduler is required (or load with DiffEditEngine.from_pretrained)")
        if (unet is None) == (transformer is None):
            raise ValueError("pass exactly one denoiser: unet (SD 1.x/2.x, SDXL) or transformer (SD3, FLUX.1)")
        if vae is None or text_encoder is None or tokenizer is None:
            raise ValueError("vae, text_encoder and tokenizer are required")
        denoiser = unet if unet is not None else transformer
        self.unet, self.transformer, self.denoiser = unet, transformer, denoiser
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.device = denoiser.device
        self.dtype = denoiser.dtype
        vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if transformer is not None:
            self.family = flow_family(transformer, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                                      text_encoder_3, tokenizer_3, vae_scale_factor=vae_scale_factor,
                                      latent_channels=vae.config.latent_channels,
                                      max_sequence_length=max_sequence_length)
        else:
            self.family = unet_family(unet, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                                      vae_scale_factor=vae_scale_factor,
                                      force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self.sampler = self.family.make_sampler(scheduler, inverse_scheduler, self.device)
        self.scheduler = self.sampler.scheduler
        self.inverse_scheduler = getattr(self.sampler, "inverse_scheduler", None)
        self.codec = LatentCodec(vae, self.device, max_batch=max(1, max_unet_batch // 2),
                                 pixel_multiple=self.family.pixel_multiple(vae_scale_factor))
        self.run_unet = DenoiserRunner(denoiser, max_unet_batch, static_shapes=static_unet_batches,
                                       unet_inputs=self.family.unet_inputs, call_model=self.family.call_model)
        self.prompts = PromptEncoder(self.family, self.device, self.dtype, prompt_cache_size)
        self.stats = EngineStats()
        self._said_blend_timing = False
        self._guidance = _Guidance(self.family.classifier_free_guidance, self.family.guidance_key,
                                   self.sampler.reference_blends_late)
        for module in (denoiser, vae, *self.family.text_encoders):
            module.requires_grad_(False)
            module.eval()

    @property
    def schedules(self):
        """SD/SDXL's DDIM walks (`schedule.Schedules`); the sampler's own on flow models."""
        return getattr(self.sampler, "schedules", self.sampler)

    @property
    def vae_scale_factor(self) -> int:
        return self.codec.scale_factor

    @property
    def family_name(self) -> str:
        """`sd` (Stable Diffusion 1.x/2.x), `sdxl`, `sd3` (SD 3/3.5) or `flux` (FLUX.1)."""
        return self.family.name

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        max_unet_batch: int = 16,
        **options,
    ) -> "DiffEditEngine":
        """Load a Stable Diffusion 1.x/2.x, SDXL, SD 3/3.5 or FLUX.1 folder or hub id (safetensors only) onto
        `device` in `dtype`.

        The family is read from the folder's `model_index.json`. `device` defaults to CUDA when available; `dtype`
        to float16 on CUDA (bfloat16 for FLUX.1), float32 on CPU. Further `options` (vae, compile_unet,
        channels_last, vae_slicing, vae_tiling, prompt_cache_size, max_sequence_length, text_encoder_device) are
        described in `diffedit_batch.engine.loading.load_components`.
        """
        from .loading import load_components

        components, engine_options = load_components(
            pretrained, device=device, dtype=dtype, revision=revision, **options
        )
        return cls(**components, max_unet_batch=max_unet_batch, **engine_options)

    # ------------------------------------------------------------------ the public call

    @torch.no_grad()
    def edit(
        self,
        images: Sequence[PIL.Image.Image],
        source_prompts: Sequence[Prompt],
        target_prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: EditSettings | Sequence[EditSettings] | None = None,
        inversion_prompts: Sequence[Prompt | None] | None = None,
        regions: Sequence[np.ndarray | None] | None = None,
    ) -> list[EditResult]:
        """Edit row i of `images` from `source_prompts[i]` to `target_prompts[i]`, seeded by `seeds[i]`.

        Prompts are strings or precomputed embeddings (SD 1.x/2.x: (seq, dim) or (1, seq, dim) tensors; SDXL, SD3,
        FLUX.1: a `Conditioning` with pooled embeddings). `settings` is one `EditSettings` for every row or one per row
        (e.g. a picture's candidates with different thresholds, strengths and guidance scales, which share its mask
        predictions and inversion). `inversion_prompts[i]` (e.g. an image caption) conditions the inversion; None
        falls back to the source. `regions[i]` (None: none) constrains row i's mask: a (h, w) array at latent
        size (the picture's size as the model works it, rounded down to 8 px or 16 on SD3 and FLUX.1, / 8: the
        unpacked latent, also on FLUX.1), nonzero where the edit may change the picture; the row's final mask is
        DiffEdit's mask AND it (`mask.constrain_mask`). Images may differ in size. Raises ValueError/TypeError naming
        the row for malformed input.
        """
        n = len(images)
        row_settings = self._row_settings(settings, n)
        if inversion_prompts is None:
            inversion_prompts = [None] * n
        if regions is None:
            regions = [None] * n
        for name, values in (("source_prompts", source_prompts), ("target_prompts", target_prompts),
                             ("seeds", seeds), ("inversion_prompts", inversion_prompts), ("regions", regions)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} images")
        if n == 0:
            return []

        started = time.perf_counter()
        prepared = [self._prepare(i, image) for i, image in enumerate(images)]
        region_of: dict[tuple, np.ndarray] = {}
        region_keys = [self._region(i, region, prepared[i], region_of) for i, region in enumerate(regions)]
        seeds = [self._check_seed(i, seed) for i, seed in enumerate(seeds)]
        inversion_prompts = [
            source if inversion is None else inversion for source, inversion in zip(source_prompts, inversion_prompts)
        ]
        for name, values in (("source", source_prompts), ("target", target_prompts), ("inversion", inversion_prompts)):
            for i, prompt in enumerate(values):
                if not isinstance(prompt, (str, torch.Tensor, Conditioning)):
                    raise TypeError(f"row {i}: {name} prompt must be a string, a tensor or a Conditioning, "
                                    f"got {type(prompt).__name__}")
        self._stage("prepare", started)

        started = time.perf_counter()
        encoded = self._encode_prompts([*source_prompts, *target_prompts, *inversion_prompts, EMPTY_PROMPT])
        self._stage("text", started)
        empty = prompt_key(EMPTY_PROMPT)
        rows = [
            _Row(
                index=i,
                image=prepared[i].key,
                seed=seeds[i],
                source=prompt_key(source_prompts[i]),
                target=prompt_key(target_prompts[i]),
                inversion=empty if row_settings[i].paper_unconditional_inversion else prompt_key(inversion_prompts[i]),
                settings=row_settings[i],
                guidance=self._guidance,
                region=region_keys[i],
            )
            for i in range(n)
        ]
        if not self.sampler.reference_blends_late and any(s.paper_blend_timing for s in row_settings):
            if not self._said_blend_timing:  # once per engine, not once per batch of a job
                log.info("paper_blend_timing changes nothing on %s: its edit always blends at the paper's timing",
                         self.family_name)
                self._said_blend_timing = True

        started = time.perf_counter()
        posteriors = self.codec.encode(prepared)
        self.stats.vae_encodes += len(posteriors)
        self._stage("vae_encode", started)

        by_shape: dict[tuple, list[_Row]] = defaultdict(list)
        for row in rows:
            by_shape[posteriors[row.image].latent_shape].append(row)
        results: dict[int, EditResult] = {}
        for group in by_shape.values():
            results.update(self._edit_group(group, posteriors, encoded, region_of))
        for row in rows:
            truncated = []
            for name, key in (("source", row.source), ("target", row.target),
                              ("inversion", prompt_key(inversion_prompts[row.index]))):
                if encoded[key].truncated:
                    truncated.append(name)
            results[row.index].truncated_prompts = tuple(truncated)
        self.stats.edits += n
        return [results[i] for i in range(n)]

    # ------------------------------------------------------------------ stages of one same-size group

    def _edit_group(self, rows: list[_Row], posteriors, encoded, region_of=None) -> dict[int, EditResult]:
        started = time.perf_counter()
        masks = self._masks(rows, posteriors, encoded, region_of or {})
        self._stage("mask", started)

        started = time.perf_counter()
        inversions = self._inversions(rows, posteriors, encoded)
        self._stage("invert", started)

        started = time.perf_counter()
        first_row: dict[tuple, _Row] = {}
        for row in rows:
            first_row.setdefault(row.edit_unit, row)
        walks: dict[tuple, list[tuple]] = defaultdict(list)
        for unit, row in first_row.items():
            walks[row.edit_walk].append(unit)
        latents_of: dict[tuple, torch.Tensor] = {}
        for units in walks.values():
            latents_of.update(self._edit_walk([first_row[unit] for unit in units], masks, inversions, encoded))
        self._stage("edit", started)

        started = time.perf_counter()
        units = list(first_row)
        images = dict(zip(units, self.codec.decode(torch.cat([latents_of[unit] for unit in units]))))
        self.stats.vae_decodes += len(units)
        self._stage("vae_decode", started)
        return {row.index: EditResult(image=images[row.edit_unit], mask=masks[row.mask_key]) for row in rows}

    def _masks(self, rows: list[_Row], posteriors, encoded, region_of=None) -> dict[tuple, np.ndarray]:
        """Per (mask unit, threshold, region): the binary mask. One denoiser prediction set per (image, seed, mask
        settings, prompt), thresholded once per ratio that a row asks for, then constrained by the row's region."""
        noisy: dict[tuple, torch.Tensor] = {}
        level_of: dict[tuple, object] = {}
        for row in rows:
            if row.noise_unit in noisy:
                continue
            s = row.settings
            posterior = posteriors[row.image]
            level = self.sampler.mask_level(s.num_inference_steps, s.mask_encode_strength, posterior.latent_shape)
            # The reference samples the posterior of `maps` copies, then draws the noise, from one generator.
            generator = torch.Generator().manual_seed(row.seed)
            shape = (s.num_maps_per_mask, *posterior.latent_shape)
            latents = self.codec.sample(posterior, self.codec.draw(generator, shape))
            noise = self.codec.draw(generator, shape)
            noisy[row.noise_unit] = self.sampler.noised(latents, noise, level)
            level_of[row.noise_unit] = level

        # (noise unit, prompt, guidance key) -> the conditioning of that evaluation
        conditioning_of: dict[tuple, Conditioning] = {}
        for row in rows:
            for prompt in (row.source, row.target):
                key = (row.noise_unit, prompt, row.mask_guidance)
                if key not in conditioning_of:
                    conditioning_of[key] = self.family.stage_conditioning(encoded[prompt].conditioning,
                                                                          row.settings.guidance_scale)
        by_level: dict[object, list[tuple]] = defaultdict(list)
        for evaluation in conditioning_of:
            by_level[level_of[evaluation[0]]].append(evaluation)
        prediction_of: dict[tuple, torch.Tensor] = {}
        for level, batch in by_level.items():
            latents = torch.cat([noisy[evaluation[0]] for evaluation in batch])
            conditioning = Conditioning.cat([conditioning_of[evaluation].repeat(len(noisy[evaluation[0]]))
                                             for evaluation in batch])
            predictions = self.run_unet(latents, self.sampler.model_timestep(level), conditioning)
            prediction_of.update(zip(batch, predictions.split([len(noisy[evaluation[0]]) for evaluation in batch])))

        masks = {}
        for row in rows:
            if row.mask_key not in masks:
                source = prediction_of[(row.noise_unit, row.source, row.mask_guidance)]
                target = prediction_of[(row.noise_unit, row.target, row.mask_guidance)]
                ratio = row.settings.mask_thresholding_ratio
                mask = threshold_mask(source, target, ratio).cpu().numpy()
                if row.region is not None:
                    mask = constrain_mask(mask, region_of[row.region])
                masks[row.mask_key] = mask
        return masks

    def _inversions(self, rows: list[_Row], posteriors, encoded) -> dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per inversion unit: (clean latent, inverted latents lowest noise first, as many as its rows' highest
        strength needs). Units of equal step count and classifier-free guidance share one walk."""
        steps: dict[tuple, int] = {}
        strength: dict[tuple, float] = {}
        scale_of: dict[tuple, float] = {}
        for row in rows:
            unit = row.inversion_unit
            scale_of[unit] = row.inversion_scale
            if row.settings.edit_steps > steps.get(unit, 0):
                steps[unit], strength[unit] = row.settings.edit_steps, row.settings.inpaint_strength
        clean_of: dict[tuple, torch.Tensor] = {}
        walks: dict[tuple, list[tuple]] = defaultdict(list)
        for unit in steps:
            image, seed, _, num_steps, guidance, _ = unit
            if (image, seed) not in clean_of:
                posterior = posteriors[image]
                generator = torch.Generator().manual_seed(seed)
                clean_of[(image, seed)] = self.codec.sample(
                    posterior, self.codec.draw(generator, (1, *posterior.latent_shape)))
            walks[(num_steps, guidance)].append(unit)

        inversions = {}
        for (num_steps, guidance), units in walks.items():
            units = _by_steps(units, steps)
            clean = torch.cat([clean_of[(unit[0], unit[1])] for unit in units])
            conditional = Conditioning.cat([self.family.stage_conditioning(encoded[unit[2]].conditioning, scale_of[unit])
                                            for unit in units])
            unconditional = None
            if guidance is not None:
                empty = encoded[prompt_key(EMPTY_PROMPT)].conditioning
                unconditional = self.family.unconditional(empty).repeat(len(units))
            schedule = self.sampler.invert(num_steps, strength[units[0]], clean.shape[1:])
            trajectory = invert(
                self.run_unet, schedule, clean.to(self.dtype), conditional, unconditional, guidance or 1.0,
                steps_per_row=[steps[unit] for unit in units],
            )
            for i, unit in enumerate(units):
                inversions[unit] = (clean[i : i + 1], [step[i : i + 1] for step in trajectory[: steps[unit]]])
        return inversions

    def _edit_walk(self, rows: list[_Row], masks, inversions, encoded) -> dict[tuple, torch.Tensor]:
        """One denoising walk for edit units of equal step count, classifier-free guidance on or off and blend timing
        (`rows` holds one row per unit); lower strengths join it late. Returns each unit's final latent (1, C, h, w)."""
        rows = sorted(rows, key=lambda row: -row.settings.edit_steps)
        steps = [row.settings.edit_steps for row in rows]
        longest = rows[0].settings
        clean = torch.cat([inversions[row.inversion_unit][0] for row in rows])
        schedule = self.sampler.denoise(longest.num_inference_steps, longest.inpaint_strength, clean.shape[1:])
        # trajectory[m]: the m-th inverted latent of every row that has one (rows are sorted, so a prefix).
        trajectory = [
            torch.cat([inversions[row.inversion_unit][1][m] for row in rows if row.settings.edit_steps > m])
            for m in range(steps[0])
        ]
        mask_batch = torch.stack([torch.from_numpy(masks[row.mask_key]) for row in rows]).unsqueeze(1)
        target = Conditioning.cat([self.family.stage_conditioning(encoded[row.target].conditioning,
                                                                  row.settings.guidance_scale) for row in rows])
        negative, guidance = None, 1.0
        if rows[0].edit_cfg:
            negative = Conditioning.cat([encoded[row.source].conditioning for row in rows])
            scales = [row.settings.guidance_scale for row in rows]
            guidance = scales[0] if len(set(scales)) == 1 else torch.tensor(scales, device=self.device)
        latents = denoise_with_mask(
            self.run_unet, schedule, trajectory, clean, mask_batch.to(self.device), target, negative, guidance,
            rows[0].paper_timing, steps_per_row=steps,
        )
        return {row.edit_unit: latents[i : i + 1] for i, row in enumerate(rows)}

    # ------------------------------------------------------------------ helpers of the call

    @staticmethod
    def _row_settings(settings, n: int) -> list[EditSettings]:
        if settings is None or isinstance(settings, EditSettings):
            return [settings or EditSettings()] * n
        if isinstance(settings, (str, bytes)) or not isinstance(settings, Sequence):
            raise TypeError(f"settings must be EditSettings or a list of them, got {type(settings).__name__}")
        if len(settings) != n:
            raise ValueError(f"settings has {len(settings)} entries for {n} images")
        for i, each in enumerate(settings):
            if not isinstance(each, EditSettings):
                raise TypeError(f"row {i}: settings must be EditSettings, got {type(each).__name__}")
        return list(settings)

    def _region(self, index: int, region, prepared: PreparedImage, region_of: dict) -> tuple | None:
        """The key of row `index`'s region constraint (None for none), its array kept in `region_of`."""
        if region is None:
            return None
        region = np.asarray(region.cpu() if isinstance(region, torch.Tensor) else region)
        shape = (prepared.pixels.shape[-2] // self.vae_scale_factor, prepared.pixels.shape[-1] // self.vae_scale_factor)
        if region.shape != shape:
            raise ValueError(f"row {index}: region must be {shape[0]}x{shape[1]} (the latent size), got "
                             f"{'x'.join(map(str, region.shape))}")
        key = region_key(region)
        region_of.setdefault(key, region != 0)
        return key

    def _prepare(self, index: int, image) -> PreparedImage:
        try:
            return self.codec.prepare(image)
        except (TypeError, ValueError) as error:
            raise type(error)(f"row {index}: {error}") from error

    @staticmethod
    def _check_seed(index: int, seed) -> int:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"row {index}: seed must be an integer, got {seed!r}")
        if not 0 <= int(seed) < SEED_LIMIT:
            raise ValueError(f"row {index}: seed must be in [0, 2**63), got {seed}")
        return int(seed)

    def _encode_prompts(self, prompts: list[Prompt]) -> dict[tuple, EncodedPrompt]:
        encoded = self.prompts.encode(prompts)
        self.stats.text_encodes = self.prompts.texts_encoded
        return encoded

    def _stage(self, name: str, started: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.seconds[name] += time.perf_counter() - started
        self.stats.unet_samples = self.run_unet.samples_evaluated
        self.stats.unet_calls = self.run_unet.calls
        self.stats.unet_shapes = self.run_unet.shapes


__all__ = ["DiffEditEngine", "EditResult", "EngineStats", "FLUX", "SD", "SD3", "SDXL"]
