"""The config's sections, each a frozen dataclass whose fields carry their own help text.

`model`, `job`, `metrics`, `concepts` and `captions` live here; `edit` is the engine's `EditSettings` and `storage`
the data layer's `StorageOptions`, each validated by its own class. Every check raises a ValueError that starts
with `ClassName.field`, which the loader rewrites to the key path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from diffedit_batch.recipe.defaults import (
    DEFAULT_MODEL,
    DEFAULT_CAPTION_MODEL,
    DEFAULT_CAPTION_PROMPT,
    DEFAULT_CONCEPT_INSTRUCTION,
    DEFAULT_CONCEPT_MODEL,
)

from diffedit_batch.data.images import parse_buckets
from diffedit_batch.engine.settings import EditSettings

from . import fields


MAX_RESOLUTION = 8192  # px of the longer side: SDXL trains at 1024, SD 2.1 at 768
MAX_UNET_BATCH = 4096
MAX_OBJECT_STORE_MIB_PER_ACTOR = 2**20  # 1 TiB per actor: past it, a typo (bytes for MiB)


@dataclass(frozen=True)
class ModelConfig:
    """Which Stable Diffusion model to load, where, and how."""

    pretrained: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Hugging Face hub id or local diffusers folder of a Stable Diffusion 1.x/2.x, SDXL base, SD 3/3.5 "
            "or FLUX.1-dev/-schnell model, "
            "loaded with from_pretrained (safetensors only). A relative folder path resolves against the current "
            "working directory. The default is the unofficial community mirror of the withdrawn SD 2.1."
        },
    )
    revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision (branch, tag or commit) of every component of the model; null = the default "
                          "branch."},
    )
    family: str = field(
        default="auto",
        metadata={
            "help": "auto | sd | sdxl | sd3 | flux: the model family (SD 1.x/2.x, SDXL, SD 3/3.5, FLUX.1); auto reads "
            "the model's "
            "model_index.json before the run starts. A value that disagrees with the model is an error."
        },
    )
    vae: str | None = field(
        default=None,
        metadata={
            "help": "A separate VAE (hub id or folder), e.g. madebyollin/sdxl-vae-fp16-fix for SDXL in float16; null "
            "= the model's own (SDXL's own VAE then runs in float32 under a float16 model, as its config asks)."
        },
    )
    device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda | cuda:N; auto = cuda when available, else cpu."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto | float32 | float16 | bfloat16; auto = float16 on CUDA (bfloat16 for SD3 and FLUX.1), "
                          "float32 on CPU."},
    )
    max_sequence_length: int | None = field(
        default=None,
        metadata={"help": "SD3 and FLUX.1: the most T5 tokens of a prompt (longer prompts are cut and reported in "
                          "prompt_truncated); null = the pipeline's default, 256 on SD3, 512 on FLUX.1 (at most 512)."},
    )
    text_encoder_device: str | None = field(
        default=None,
        metadata={"help": "Where the text encoders run: null = model.device; cpu or cuda:N where they do not fit beside "
                          "the denoiser (FLUX.1's T5 is 9.5 GB in bfloat16). Embeddings move to model.device."},
    )
    resolution: int = field(
        default=768, metadata={"help": "Longer image side fed to the model, in pixels; a multiple of 8."}
    )
    max_unet_batch: int = field(
        default=16, metadata={"help": "Most UNet samples per forward call; bounds GPU memory."}
    )
    compile_unet: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the UNet (the first batches are slow); every UNet call is then padded to "
            "max_unet_batch samples, so it compiles once per latent size."
        },
    )
    compile_mode: str = field(
        default="default",
        metadata={"help": "default | reduce-overhead | max-autotune: torch.compile's mode (reduce-overhead: CUDA graphs)."},
    )
    aspect_buckets: str = field(
        default="off",
        metadata={
            "help": "off | auto | WxH,WxH,...: off keeps each picture's aspect ratio (longer side = resolution, the "
            "reference's resize); auto resizes it to the nearest of a set of shapes of about resolution^2 pixels "
            "(sides multiples of 64, aspect 1:4 to 4:1), so pictures of similar shape share UNet batches; or list "
            "your own shapes. Outputs are restored to each input's size."
        },
    )
    vae_slicing: bool = field(
        default=False, metadata={"help": "Run the VAE one image at a time (less memory, a little slower)."}
    )
    vae_tiling: bool = field(
        default=False, metadata={"help": "Run the VAE in overlapping tiles (for large images; less memory)."}
    )
    channels_last: bool = field(
        default=True, metadata={"help": "Use the channels_last memory format for the UNet and VAE (CUDA only)."}
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.non_empty(self, "pretrained")
        fields.non_empty(self, "revision")
        fields.one_of(self, "family", ("auto", "sd", "sdxl", "sd3", "flux"))
        fields.non_empty(self, "vae")
        fields.device(self, "device")
        fields.dtype(self, "dtype")
        if self.text_encoder_device is not None:
            fields.device(self, "text_encoder_device")
        if self.max_sequence_length is not None:
            fields.positive_int(self, "max_sequence_length")
            if self.max_sequence_length > 512:
                raise ValueError(f"ModelConfig.max_sequence_length must be at most 512 (T5's), got "
                                 f"{self.max_sequence_length!r}")
        fields.positive_int(self, "resolution")
        if self.resolution % 8:
            raise ValueError(f"ModelConfig.resolution must be a multiple of 8, got {self.resolution!r}")
        # Bounds far above any model's training size: past them a typo would fail deep inside an actor (a 10^6 px
        # side is a terabyte latent), not here.
        if self.resolution > MAX_RESOLUTION:
            raise ValueError(f"ModelConfig.resolution must be at most {MAX_RESOLUTION}, got {self.resolution!r}")
        fields.positive_int(self, "max_unet_batch")
        if self.max_unet_batch > MAX_UNET_BATCH:
            raise ValueError(f"ModelConfig.max_unet_batch must be at most {MAX_UNET_BATCH}, got {self.max_unet_batch!r}")
        fields.one_of(self, "compile_mode", ("default", "reduce-overhead", "max-autotune"))
        try:
            parse_buckets(self.aspect_buckets, self.resolution, self.family)
        except ValueError as error:
            raise ValueError(f"ModelConfig.aspect_buckets {error}") from None


@dataclass(frozen=True)
class JobConfig:
    """How the Ray Data job runs: batching, actor pool, resources, seeds, failure policy."""

    batch_size: int = field(default=8, metadata={"help": "Edit requests per engine call."})
    num_actors: int = field(default=1, metadata={"help": "Edit actor pool size (its minimum when autoscaling)."})
    max_actors: int | None = field(
        default=None,
        metadata={"help": "Autoscaling upper bound of the edit actor pool; null = a fixed pool of num_actors."},
    )
    gpus_per_actor: float = field(default=1.0, metadata={"help": "GPUs reserved by each edit actor; 0 on CPU."})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs reserved by each edit actor."})
    seed: int = field(
        default=0,
        metadata={"help": "Job seed, combined with the row id for rows that have no seed of their own."},
    )
    max_failed_fraction: float = field(
        default=0.0,
        metadata={"help": "The command exits non-zero when the fraction of failed rows exceeds this, in [0, 1]."},
    )
    progress_interval_s: float = field(
        default=30.0,
        metadata={"help": "Seconds between progress lines in a log "
                          "(on a terminal: a progress bar, redrawn each second)."},
    )
    lease_timeout_s: float = field(
        default=120.0,
        metadata={
            "help": "The run lease on the output prefix (PREFIX/lease.json) is renewed every quarter of this; a lease "
            "not renewed for this long (its run died) is taken over by the next run, and a run that finds its lease "
            "taken over stops. A live lease makes a second run on the same output exit with code 3."
        },
    )
    connect_timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "How long a run waits for the Ray cluster it is given (--address or RAY_ADDRESS) to answer; then "
            "it exits with code 2 naming the address, its lease released. Covers a cluster that is still starting."
        },
    )
    max_image_pixels: int = field(
        default=40_000_000,
        metadata={
            "help": "Largest input image accepted, in pixels; larger ones fail their row (decompression-bomb guard)."
        },
    )
    decode_cpus: float = field(default=1.0, metadata={"help": "CPUs per image decode task."})
    write_cpus: float = field(default=1.0, metadata={"help": "CPUs per result write task."})
    max_tasks_in_flight_per_actor: int = field(
        default=2,
        metadata={"help": "Batches in flight at each edit actor (Ray Data); above 1 overlaps input with compute."},
    )
    # 512 MiB holds ~150 decoded 1024 px pictures (a queue of many batches ahead of a GPU), and keeps the store pages
    # a worker writes, which stay private to it until the next stage maps them, well under 1 GiB per process: at
    # 1024 a noop edit actor's USS reached 1.26 GiB over 10^6 rows of 2 KB prompts (benchmarks/README.md).
    object_store_mib_per_actor: int = field(
        default=512,
        metadata={
            "help": "Ray object-store memory the edit pass may fill with rows in flight, in MiB per edit actor (times "
            "max_actors, else num_actors): Ray Data's resource limit. When one stage outpaces the next, the rows "
            "between them wait in the store up to this, not up to half the cluster's store. 0: Ray Data's own limit."
        },
    )
    record_batch_size: int = field(
        default=256,
        metadata={
            "help": "Result records written together while the run goes on, after their outputs; a driver killed "
            "mid-run re-does at most this many edits per write task."
        },
    )
    verify_sources: bool = field(
        default=True,
        metadata={
            "help": "On a re-run, ask storage for the identity of each done edit's picture (a stat locally, a HEAD "
            "on S3/GCS, in the plan's tasks) and edit again, as changed, those whose picture changed under the same "
            "URI. false: trust the URI (stores where a HEAD per row costs too much)."
        },
    )
    records_per_file: int = field(
        default=10_000,
        metadata={
            "help": "Compaction target: at the end of each run the result manifest's small record files are merged "
            "into files of at least this many records (at most one file stays smaller)."
        },
    )
    mode: str = field(
        default="edit",
        metadata={
            "help": "edit | noop; noop skips diffusion but keeps the whole data path (read, decode, "
            "batch, write), for data-path benchmarks."
        },
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.positive_int(self, "batch_size")
        fields.positive_int(self, "num_actors")
        if self.max_actors is not None and self.max_actors < self.num_actors:
            raise ValueError(
                f"JobConfig.max_actors must be null or >= num_actors ({self.num_actors}), got {self.max_actors!r}"
            )
        fields.at_least(self, "gpus_per_actor", 0.0)
        fields.at_least(self, "cpus_per_actor", 0.0)
        fields.seed(self, "seed")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ValueError(f"JobConfig.max_failed_fraction must be in [0, 1], got {self.max_failed_fraction!r}")
        fields.seconds(self, "progress_interval_s")
        fields.seconds(self, "lease_timeout_s")
        fields.seconds(self, "connect_timeout_s")
        fields.positive_int(self, "max_image_pixels")
        fields.at_least(self, "decode_cpus", 0.0, open_=True)
        fields.at_least(self, "write_cpus", 0.0, open_=True)
        fields.positive_int(self, "max_tasks_in_flight_per_actor")
        fields.at_least(self, "object_store_mib_per_actor", 0)
        if self.object_store_mib_per_actor > MAX_OBJECT_STORE_MIB_PER_ACTOR:
            raise ValueError(f"JobConfig.object_store_mib_per_actor must be at most {MAX_OBJECT_STORE_MIB_PER_ACTOR} "
                             f"(MiB), got {self.object_store_mib_per_actor!r}")
        fields.positive_int(self, "record_batch_size")
        fields.positive_int(self, "records_per_file")
        fields.one_of(self, "mode", ("edit", "noop"))


@dataclass(frozen=True)
class InputConfig:
    """What the job reads (--input): its format, the columns that travel with every edit, the names of its classes."""

    format: str = field(
        default="auto",
        metadata={
            "help": "auto | parquet | webdataset | imagefolder. auto: a file by its extension (.parquet, .tar), a "
            "folder by what it holds (Parquet files, .tar shards, or <class>/<picture> folders); a folder holding "
            "two kinds stops the run naming them."
        },
    )
    carry_columns: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Input columns copied as stored into every record, output and export of the row's edits (a "
            "ClassLabel stays its index, with its names in the exports' features), e.g. [label, objects]; \"*\" "
            "carries every column the job does not itself use. Numbers, strings, booleans, lists and structs of "
            "them."
        },
    )
    label_names: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Class names of the label column (index 0 first) when the input does not name them: a "
            "WebDataset's .cls numbers, a Parquet label column without Hugging Face metadata, or an ImageFolder "
            "whose classes are not all its sorted folder names. Hugging Face ClassLabel metadata wins."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.carry_columns, str):  # carry_columns: "*"
            object.__setattr__(self, "carry_columns", (self.carry_columns,))
        fields.check_field_types(self)
        fields.one_of(self, "format", ("auto", "parquet", "webdataset", "imagefolder"))
        if "*" in self.carry_columns and len(self.carry_columns) > 1:
            raise ValueError('InputConfig.carry_columns: "*" carries every column; give it alone')
        if len(set(self.carry_columns)) != len(self.carry_columns):
            raise ValueError("InputConfig.carry_columns names a column twice")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError("InputConfig.label_names names a class twice")


@dataclass(frozen=True)
class OutputConfig:
    """How the edits and masks are stored: one file each, or shards that training pipelines read."""

    format: str = field(
        default="files",
        metadata={
            "help": "files | webdataset | parquet. files: PREFIX/images/<key>.png and PREFIX/masks/<key>.png (small "
            "jobs). webdataset: tar shards PREFIX/shards/*.tar of <key>.png (or .jpg), <key>.mask.png, <key>.json "
            "and <key>.src.<ext>. parquet: Parquet shards PREFIX/shards/*.parquet that Hugging Face datasets loads "
            "with Image features."
        },
    )
    shard_rows: int = field(default=1000, metadata={"help": "Most edits per shard (webdataset and parquet)."})
    shard_max_mb: float = field(
        default=256.0,
        metadata={"help": "Most megabytes of images per shard; a shard closes at shard_rows or this, whichever first."},
    )
    image_format: str = field(
        default="png", metadata={"help": "png | jpg: how a shard stores the edit (masks are always PNG)."}
    )
    jpeg_quality: int = field(default=95, metadata={"help": "JPEG quality of the edit when image_format is jpg."})
    png_compress_level: int = field(
        default=1,
        metadata={
            "help": "zlib level of every PNG written, 0-9: 1 is 3-4x faster to encode than 6 for 5-10% more bytes."
        },
    )
    include_source: bool = field(
        default=True,
        metadata={"help": "Shards also hold each source picture's own bytes (<key>.src.<ext>): complete training pairs."},
    )
    paste_background: bool = field(
        default=False,
        metadata={"help": "The written edit takes the input's own pixels wherever the final mask is 0, so the kept "
                          "part of the picture is bit-identical to the input (not a VAE round trip; exact in PNG, "
                          "not in JPEG)."},
    )
    feather_px: int = field(
        default=0,
        metadata={"help": "With paste_background: blend the edit into the input over this many pixels, inside the "
                          "edited area only (the kept part stays the input's)."},
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.one_of(self, "format", ("files", "webdataset", "parquet"))
        fields.positive_int(self, "shard_rows")
        fields.at_least(self, "shard_max_mb", 0.0, open_=True)
        fields.one_of(self, "image_format", ("png", "jpg"))
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"OutputConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality!r}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"OutputConfig.png_compress_level must be in [0, 9], got {self.png_compress_level!r}")
        fields.at_least(self, "feather_px", 0)
        if self.feather_px and not self.paste_background:
            raise ValueError("OutputConfig.feather_px needs output.paste_background: true")

    @property
    def sharded(self) -> bool:
        return self.format != "files"


@dataclass(frozen=True)
class MetricsConfig:
    """Per-edit quality metrics written to the result manifest (see diffedit_batch.data.metrics)."""

    background: bool = field(
        default=True,
        metadata={
            "help": "Compute background PSNR and SSIM (outside the mask, at model resolution) in the write stage; "
            "about 0.15 s of CPU per 768 px edit."
        },
    )
    clip_model: str | None = field(
        default=None,
        metadata={
            "help": "CLIP model (hub id or local folder, safetensors) scoring the edit against the target prompt "
            "and the input against the source prompt, in its own actor pool; null = no CLIP scores."
        },
    )
    clip_device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda | cuda:N for the CLIP model; auto = cuda when available."}
    )
    clip_num_actors: int = field(default=1, metadata={"help": "CLIP scoring actor pool size."})
    clip_cpus_per_actor: float = field(default=0.5, metadata={"help": "CPUs reserved by each CLIP scoring actor."})
    clip_gpus_per_actor: float = field(
        default=0.0, metadata={"help": "GPUs reserved by each CLIP scoring actor (a fraction shares a GPU)."}
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.non_empty(self, "clip_model")
        fields.device(self, "clip_device")
        fields.positive_int(self, "clip_num_actors")
        fields.at_least(self, "clip_cpus_per_actor", 0.0)
        fields.at_least(self, "clip_gpus_per_actor", 0.0)


@dataclass(frozen=True)
class ConceptsConfig:
    """Concept prompts: Flan-T5 captions of a concept, averaged into one prompt embedding (diffedit_batch.recipe.concepts)."""

    model: str = field(
        default=DEFAULT_CONCEPT_MODEL,
        metadata={"help": "Seq2seq model (hub id or local folder, safetensors only) that writes the captions."},
    )
    num_captions: int = field(default=16, metadata={"help": "Captions sampled per concept, averaged into its prompt."})
    instruction: str = field(
        default=DEFAULT_CONCEPT_INSTRUCTION,
        metadata={"help": "The model's input; {concept} is replaced by the concept (and must appear)."},
    )
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (> 0)."})
    top_k: int = field(default=10, metadata={"help": "Sample from the k likeliest tokens; 0 = no top-k filtering."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens per caption."})
    seed: int = field(
        default=0,
        metadata={
            "help": "Sampling seed; each concept samples from a seed derived from (seed, concept), so its captions "
            "do not depend on the other concepts of the job."
        },
    )
    device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda | cuda:N; auto = cuda when available, else cpu."}
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "auto | float32 | float16 | bfloat16; auto = bfloat16 on CUDA (T5 can overflow float16; float32 "
            "on GPUs without bfloat16), float32 on CPU."
        },
    )
    gpus: float = field(
        default=0.0, metadata={"help": "GPUs reserved by the concept-prompt actor (a fraction shares one)."}
    )
    cpus: float = field(default=1.0, metadata={"help": "CPUs reserved by the concept-prompt actor."})

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.non_empty(self, "model")
        fields.positive_int(self, "num_captions")
        if "{concept}" not in self.instruction:
            raise ValueError(f"ConceptsConfig.instruction must contain {{concept}}, got {self.instruction!r}")
        fields.at_least(self, "temperature", 0.0, open_=True)
        fields.at_least(self, "top_k", 0)
        fields.positive_int(self, "max_new_tokens")
        fields.seed(self, "seed")
        fields.device(self, "device")
        fields.dtype(self, "dtype")
        fields.at_least(self, "gpus", 0.0)
        fields.at_least(self, "cpus", 0.0)


@dataclass(frozen=True)
class CaptionsConfig:
    """Inversion captions: BLIP captions of the input pictures (diffedit_batch.recipe.captions)."""

    model: str = field(
        default=DEFAULT_CAPTION_MODEL,
        metadata={"help": "BLIP captioning model (hub id or local folder, safetensors only)."},
    )
    prompt: str | None = field(
        default=DEFAULT_CAPTION_PROMPT,
        metadata={"help": "Text the caption continues (conditional captioning); null = unconditional captions."},
    )
    max_new_tokens: int = field(default=20, metadata={"help": "Most tokens generated after the prompt."})
    caption_inversion: bool = field(
        default=False,
        metadata={"help": "Caption every input picture and use the caption as its inversion prompt."},
    )
    device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda | cuda:N; auto = cuda when available, else cpu."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto | float32 | float16 | bfloat16; auto = float16 on CUDA, float32 on CPU."},
    )
    gpus: float = field(
        default=0.0, metadata={"help": "GPUs reserved by each captioning actor (a fraction shares one)."}
    )
    cpus: float = field(default=1.0, metadata={"help": "CPUs reserved by each captioning actor."})
    batch_size: int = field(default=8, metadata={"help": "Pictures per BLIP generate call."})

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.non_empty(self, "model")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("CaptionsConfig.prompt must not be empty (null = unconditional captions)")
        fields.positive_int(self, "max_new_tokens")
        fields.device(self, "device")
        fields.dtype(self, "dtype")
        fields.at_least(self, "gpus", 0.0)
        fields.at_least(self, "cpus", 0.0)
        fields.positive_int(self, "batch_size")


@dataclass(frozen=True)
class CandidatesConfig:
    """Several edits tried per request with drawn settings, scored, filtered by floors, the best kept
    (diffedit_batch.recipe.candidates). A request's candidates share one engine call: its mask predictions and its
    inversion are made once."""

    count: int = field(default=1, metadata={"help": "Edits tried per request; 1 = one edit per request, no scoring."})
    vary: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Edit settings each candidate draws, from the request's seed and the candidate's index: "
            "`setting: [low, high]` (uniform; integers inclusive for integer settings), `setting: [a, b, c]` or "
            "`{choices: [a, b]}` (one of them), and `seed: true` (candidates after the first get seeds of their "
            "own). E.g. {mask_thresholding_ratio: [2, 4], inpaint_strength: [0.5, 0.8], guidance_scale: [5, 12]}."
        },
    )
    keep: int = field(default=1, metadata={"help": "Most candidates kept per request (the best by rank_by)."})
    rank_by: str = field(
        default="clip_directional",
        metadata={"help": "The score candidates are ranked by, higher first: clip_directional | clip_image | "
                          "clip_target_score | clip_label | background_psnr | background_ssim | mask_coverage."},
    )
    min: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Floors per score, e.g. {clip_directional: 0.2, clip_image: 0.7, clip_label: 0.5}: a "
                          "candidate below one (or whose score cannot be computed) is filtered, whatever its rank. "
                          "With count 1 they apply to the single edit: an edit below is filtered, saying why."},
    )
    max: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Ceilings per score, e.g. {mask_coverage: 0.6} to refuse masks that cover the picture."},
    )
    keep_rejected: bool = field(
        default=False,
        metadata={"help": "Write the images and masks of filtered candidates too (their records say filtered)."},
    )

    def __post_init__(self) -> None:
        from diffedit_batch.recipe.candidates import SCORES, check_vary

        fields.check_field_types(self)
        fields.positive_int(self, "count")
        fields.positive_int(self, "keep")
        if self.count > 64:
            raise ValueError(f"CandidatesConfig.count must be at most 64 (one engine call holds them), got {self.count}")
        if self.keep > self.count:
            raise ValueError(f"CandidatesConfig.keep must be at most count ({self.count}), got {self.keep}")
        fields.one_of(self, "rank_by", SCORES)
        for name in ("min", "max"):
            for score, bound in getattr(self, name).items():
                if score not in SCORES:
                    raise ValueError(f"CandidatesConfig.{name}.{score} is not a score (one of {', '.join(SCORES)})")
                if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                    raise ValueError(f"CandidatesConfig.{name}.{score} must be a finite number, got {bound!r}")
        try:
            check_vary(self.vary, EditSettings())
        except ValueError as error:
            raise ValueError(f"CandidatesConfig.{error}") from None

    @property
    def enabled(self) -> bool:
        """More than one edit per request: candidates are drawn, scored and selected."""
        return self.count > 1

    @property
    def filters_single(self) -> bool:
        """One edit per request held to floors or ceilings: it is scored and filtered as a candidate would be."""
        return not self.enabled and bool(self.min or self.max)

    @property
    def scores_used(self) -> set[str]:
        if self.enabled:
            return {self.rank_by, *self.min, *self.max}
        return {*self.min, *self.max}


@dataclass(frozen=True)
class PromptsConfig:
    """Prompt templates: prompts made from each manifest row's own columns (diffedit_batch.data.templates). A
    placeholder `{column}` names any manifest column (a Hugging Face ClassLabel column gives its class name);
    `{caption}` is the BLIP caption of the picture, unless the manifest has a column of that name. A row's own
    source_prompt, target_prompt or target_prompts win over the templates."""

    source: str | None = field(
        default=None,
        metadata={"help": "Template of the source prompt, e.g. 'a photo of a {label}'; null = the row's "
                          "source_prompt (or a caption)."},
    )
    targets: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Target templates applied to every row (a domain list, e.g. ['a photo of a {label} in the "
                          "snow', 'a painting of a {label}']). They share one inversion per picture, as a row's "
                          "target_prompts do; edit ids are '<id>#<k>', k the index in this list. A row's own "
                          "target_prompt or target_prompts replace them for that row."},
    )
    label_template: str | None = field(
        default=None,
        metadata={"help": "Template naming the label column once, e.g. 'a photo of a {label}': the texts of the "
                          "clip_label score (one per class of that column)."},
    )

    def __post_init__(self) -> None:
        from diffedit_batch.data.templates import check_template, placeholders

        fields.check_field_types(self)
        for name in ("source", "label_template"):
            fields.non_empty(self, name)
        for name, template in (("source", self.source), ("label_template", self.label_template),
                               *((f"targets[{k}]", t) for k, t in enumerate(self.targets))):
            if template is None:
                continue
            if not template.strip():
                raise ValueError(f"PromptsConfig.{name} must not be empty")
            try:
                check_template(template)
            except ValueError as error:
                raise ValueError(f"PromptsConfig.{name} {error}") from None
        if self.label_template is not None and len(set(placeholders(self.label_template))) != 1:
            raise ValueError(f"PromptsConfig.label_template must name exactly one column (the label), got "
                             f"{self.label_template!r}")

    @property
    def label_column(self) -> str | None:
        """The column `label_template` names, if any."""
        from diffedit_batch.data.templates import placeholders

        return None if self.label_template is None else placeholders(self.label_template)[0]


@dataclass(frozen=True)
class AugmentConfig:
    """How many edits each row makes: K of its targets, or a number per class spread over the class's rows."""

    per_image: int | None = field(
        default=None,
        metadata={"help": "Edits per row: K of its targets (prompts.targets, or its own target_prompts), drawn from "
                          "the row's seed (a larger K keeps the smaller K's draws); null = all of them. With "
                          "balance_by: the most edits any row makes."},
    )
    balance_by: str | None = field(
        default=None,
        metadata={"help": "A column whose values are classes (e.g. label): each class gets per_class edits, or as "
                          "many as its rows allow, spread evenly over its rows (a rare class's rows make more edits "
                          "each). Class counts come from a group-by over the whole manifest before the plan."},
    )
    per_class: int | None = field(
        default=None, metadata={"help": "Edits per class with balance_by."},
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.non_empty(self, "balance_by")
        for name in ("per_image", "per_class"):
            if getattr(self, name) is not None:
                fields.positive_int(self, name)
        if (self.balance_by is None) != (self.per_class is None):
            raise ValueError("AugmentConfig.per_class and balance_by go together: set both or neither")

    @property
    def enabled(self) -> bool:
        return self.per_image is not None or self.balance_by is not None


@dataclass(frozen=True)
class RegionConfig:
    """Regions of the picture the edit must keep to or keep out of: the manifest's region_mask and region_boxes
    columns (or boxes read from a column), applied to DiffEdit's mask."""

    mode: str = field(
        default="inside",
        metadata={"help": "inside | outside. inside: edit only inside the region (DiffEdit's mask AND the region); "
                          "outside: keep the region (DiffEdit's mask minus the region), e.g. labelled objects of a "
                          "detection set. At latent size a cell that touches a kept pixel is kept."},
    )
    grow_px: int = field(
        default=0, metadata={"help": "Grow the region by this many pixels (square), at the picture's own size."},
    )
    boxes_from: str | None = field(
        default=None,
        metadata={"help": "Read region boxes ([x, y, w, h] in pixels, COCO order) from a column path such as "
                          "objects.bbox: a struct of lists (as datasets writes a Sequence of dicts) or a list of "
                          "structs. Replaces the region_boxes column."},
    )

    def __post_init__(self) -> None:
        fields.check_field_types(self)
        fields.one_of(self, "mode", ("inside", "outside"))
        fields.at_least(self, "grow_px", 0)
        fields.non_empty(self, "boxes_from")
        if self.boxes_from is not None and len(self.boxes_from.split(".")) != 2:
            raise ValueError(f"RegionConfig.boxes_from must be 'column.field', got {self.boxes_from!r}")
