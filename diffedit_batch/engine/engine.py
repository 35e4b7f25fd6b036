"""DiffEditEngine: batched DiffEdit (mask, invert, edit) on diffusers' models and schedulers.

One call edits many rows. Work is shared wherever the result cannot differ: one VAE encode per distinct
picture, one text-encoder pass per distinct prompt, one set of mask predictions per (picture, seed, prompt),
one inversion per (picture, seed, inversion prompt). Rows of equal latent size share UNet calls, up to
`max_unet_batch` samples per call. Each row's result equals what the deprecated diffusers pipeline gives for
that row alone with `torch.Generator().manual_seed(seed)`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import PIL.Image
import torch

from diffedit_batch.seeds import SEED_LIMIT

from .denoise import denoise_with_mask
from .inversion import invert
from .latents import LatentCodec, PreparedImage
from .mask import noised_latents, threshold_mask
from .prompts import EncodedPrompt, Prompt, PromptEncoder, prompt_key
from .schedule import Schedules, inverse_scheduler_from
from .settings import EditSettings
from .unet_runner import UNetRunner

EMPTY_PROMPT = ""


@dataclass
class EditResult:
    """One row's edit."""

    # RGB, the size the model worked at (input size rounded down to a multiple of 8); None when the edit came out
    # NaN or Inf (float16 overflow): there is no picture to show, and the caller must treat the row as failed.
    image: PIL.Image.Image | None
    mask: np.ndarray  # uint8 in {0, 1}, (H / 8, W / 8): 1 where the edit may change the image
    truncated_prompts: tuple[str, ...] = ()  # which of "source", "target", "inversion" were cut to the encoder's limit


@dataclass
class EngineStats:
    """Work counters and stage seconds, cumulative since the engine was built (for benchmarks and logs)."""

    unet_calls: int = 0  # UNet forward calls
    unet_samples: int = 0  # UNet sample-evaluations (the batch sizes of those calls, summed)
    unet_shapes: set[tuple[int, ...]] = field(default_factory=set)  # distinct UNet input shapes
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
class _Row:
    index: int
    image: str  # image key
    seed: int
    source: tuple  # prompt keys
    target: tuple
    inversion: tuple  # the inversion's conditioning prompt key

    @property
    def inversion_unit(self) -> tuple:
        return (self.image, self.seed, self.inversion)

    @property
    def mask_unit(self) -> tuple:
        return (self.image, self.seed, self.source, self.target)

    @property
    def edit_unit(self) -> tuple:
        return (self.inversion_unit, self.mask_unit)


class DiffEditEngine:
    """Batched DiffEdit. Pure torch/diffusers: no Ray, files or config here.

    Args:
        unet, vae, text_encoder, tokenizer: Stable Diffusion components (diffusers / transformers modules).
        scheduler: denoising scheduler; default DDIMScheduler from the UNet's training schedule is not
            known here, so pass one or use `from_pretrained`.
        inverse_scheduler: inversion scheduler; defaults to DDIMInverseScheduler built from `scheduler`'s config.
        max_unet_batch: most UNet samples per forward call (bounds activation memory).
        prompt_cache_size: prompt embeddings kept across calls.
        static_unet_batches: every UNet call has exactly `max_unet_batch` samples (padded), for a compiled UNet.
    """

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler=None,
        inverse_scheduler=None,
        max_unet_batch: int = 16,
        prompt_cache_size: int = 256,
        static_unet_batches: bool = False,
    ):
        from diffusers import DDIMScheduler

        if scheduler is None:
            raise ValueError("scheduler is required (or load with DiffEditEngine.from_pretrained)")
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        if inverse_scheduler is None:
            inverse_scheduler = inverse_scheduler_from(scheduler.config)
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler, self.inverse_scheduler = scheduler, inverse_scheduler
        self.device = unet.device
        self.dtype = unet.dtype
        self.schedules = Schedules(scheduler, inverse_scheduler, self.device)
        self.run_unet = UNetRunner(unet, max_unet_batch, static_shapes=static_unet_batches)
        self.codec = LatentCodec(vae, self.device, max_batch=max(1, max_unet_batch // 2))
        self.prompts = PromptEncoder(text_encoder, tokenizer, self.device, self.dtype, prompt_cache_size)
        self.stats = EngineStats()
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
            module.eval()

    @property
    def vae_scale_factor(self) -> int:
        return self.codec.scale_factor

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
        """Load a Stable Diffusion folder or hub id (safetensors only) onto `device` in `dtype`.

        `device` defaults to CUDA when available; `dtype` to float16 on CUDA, float32 on CPU. Further
        `options` (compile_unet, channels_last, vae_slicing, vae_tiling, prompt_cache_size) are described in
        `diffedit_batch.engine.loading.load_components`.
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
        settings: EditSettings | None = None,
        inversion_prompts: Sequence[Prompt | None] | None = None,
    ) -> list[EditResult]:
        """Edit row i of `images` from `source_prompts[i]` to `target_prompts[i]`, seeded by `seeds[i]`.

        Prompts are strings or precomputed embeddings ((seq, dim) or (1, seq, dim) tensors).
        `inversion_prompts[i]` (e.g. an image caption) conditions the inversion; None falls back to the source.
        Images may differ in size. Raises ValueError/TypeError naming the row for malformed input.
        """
        settings = settings or EditSettings()
        if not isinstance(settings, EditSettings):
            raise TypeError(f"settings must be EditSettings, got {type(settings).__name__}")
        n = len(images)
        if inversion_prompts is None:
            inversion_prompts = [None] * n
        for name, values in (("source_prompts", source_prompts), ("target_prompts", target_prompts),
                             ("seeds", seeds), ("inversion_prompts", inversion_prompts)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} images")
        if n == 0:
            return []

        started = time.perf_counter()
        prepared = [self._prepare(i, image) for i, image in enumerate(images)]
        seeds = [self._check_seed(i, seed) for i, seed in enumerate(seeds)]
        inversion_prompts = [
            source if inversion is None else inversion for source, inversion in zip(source_prompts, inversion_prompts)
        ]
        for name, values in (("source", source_prompts), ("target", target_prompts), ("inversion", inversion_prompts)):
            for i, prompt in enumerate(values):
                if not isinstance(prompt, (str, torch.Tensor)):
                    raise TypeError(f"row {i}: {name} prompt must be a string or a tensor, got {type(prompt).__name__}")
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
                inversion=empty if settings.paper_unconditional_inversion else prompt_key(inversion_prompts[i]),
            )
            for i in range(n)
        ]

        started = time.perf_counter()
        posteriors = self.codec.encode(prepared)
        self.stats.vae_encodes += len(posteriors)
        self._stage("vae_encode", started)

        by_shape: dict[tuple, list[_Row]] = defaultdict(list)
        for row in rows:
            by_shape[posteriors[row.image].latent_shape].append(row)
        results: dict[int, EditResult] = {}
        for group in by_shape.values():
            results.update(self._edit_group(group, posteriors, encoded, settings))
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

    def _edit_group(self, rows, posteriors, encoded, settings) -> dict[int, EditResult]:
        started = time.perf_counter()
        masks = self._masks(rows, posteriors, encoded, settings)
        self._stage("mask", started)

        started = time.perf_counter()
        inversions = self._inversions(rows, posteriors, encoded, settings)
        self._stage("invert", started)

        started = time.perf_counter()
        edit_units = list(dict.fromkeys(row.edit_unit for row in rows))
        first_row = {}
        for row in rows:
            first_row.setdefault(row.edit_unit, row)
        schedule = self.schedules.denoise(settings.num_inference_steps, settings.inpaint_strength)
        trajectories = [inversions[unit[0]][1] for unit in edit_units]
        trajectory = [torch.cat(step) for step in zip(*trajectories)]
        clean = torch.cat([inversions[unit[0]][0] for unit in edit_units])
        mask_batch = torch.stack([torch.from_numpy(masks[unit[1]]) for unit in edit_units]).unsqueeze(1)
        target = torch.cat([encoded[first_row[unit].target].embedding for unit in edit_units])
        negative = None
        if settings.edit_guided:
            negative = torch.cat([encoded[first_row[unit].source].embedding for unit in edit_units])
        latents = denoise_with_mask(
            self.run_unet, schedule, trajectory, clean, mask_batch.to(self.device), target, negative,
            settings.guidance_scale, settings.paper_blend_timing,
        )
        self._stage("edit", started)

        started = time.perf_counter()
        images = dict(zip(edit_units, self.codec.decode(latents)))
        self.stats.vae_decodes += len(edit_units)
        self._stage("vae_decode", started)
        return {row.index: EditResult(image=images[row.edit_unit], mask=masks[row.mask_unit]) for row in rows}

    def _masks(self, rows, posteriors, encoded, settings) -> dict[tuple, np.ndarray]:
        """Per (image, seed, source, target): the binary mask. One UNet prediction set per (image, seed, prompt)."""
        scheduler = self.scheduler  # add_noise only reads its training schedule
        encode_timestep = torch.tensor(
            self.schedules.mask_timestep(settings.num_inference_steps, settings.mask_encode_strength),
            device=self.device,
        )
        maps = settings.num_maps_per_mask
        noisy: dict[tuple, torch.Tensor] = {}
        for row in rows:
            if (row.image, row.seed) in noisy:
                continue
            posterior = posteriors[row.image]
            # The reference samples the posterior of `maps` copies, then draws the noise, from one generator.
            generator = torch.Generator().manual_seed(row.seed)
            shape = (maps, *posterior.latent_shape)
            latents = self.codec.sample(posterior, self.codec.draw(generator, shape))
            noise = self.codec.draw(generator, shape)
            noisy[(row.image, row.seed)] = noised_latents(latents, noise, scheduler, encode_timestep)

        evaluations = list(dict.fromkeys(
            key for row in rows for key in ((row.image, row.seed, row.source), (row.image, row.seed, row.target))
        ))
        latents = torch.cat([noisy[(image, seed)] for image, seed, _ in evaluations])
        embeddings = torch.cat([encoded[prompt].embedding.expand(maps, -1, -1) for _, _, prompt in evaluations])
        predictions = self.run_unet(latents, encode_timestep, embeddings).split(maps)
        prediction_of = dict(zip(evaluations, predictions))

        masks = {}
        for row in rows:
            if row.mask_unit not in masks:
                source = prediction_of[(row.image, row.seed, row.source)]
                target = prediction_of[(row.image, row.seed, row.target)]
                masks[row.mask_unit] = threshold_mask(source, target, settings.mask_thresholding_ratio).cpu().numpy()
        return masks

    def _inversions(self, rows, posteriors, encoded, settings) -> dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per (image, seed, inversion prompt): (clean latent, inverted latents lowest noise first)."""
        units = list(dict.fromkeys(row.inversion_unit for row in rows))
        clean = []
        for image, seed, _ in units:
            posterior = posteriors[image]
            generator = torch.Generator().manual_seed(seed)
            clean.append(self.codec.sample(posterior, self.codec.draw(generator, (1, *posterior.latent_shape))))
        clean_latents = torch.cat(clean)
        conditional = torch.cat([encoded[prompt].embedding for _, _, prompt in units])
        unconditional = None
        if settings.inversion_guided:
            unconditional = encoded[prompt_key(EMPTY_PROMPT)].embedding.expand(len(units), -1, -1)
        schedule = self.schedules.invert(settings.num_inference_steps, settings.inpaint_strength)
        trajectory = invert(
            self.run_unet, schedule, clean_latents.to(self.dtype), conditional, unconditional,
            settings.invert_guidance_scale,
        )
        return {
            unit: (clean_latents[i : i + 1], [step[i : i + 1] for step in trajectory]) for i, unit in enumerate(units)
        }

    # ------------------------------------------------------------------ helpers of the call

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
