"""The job config: typed sections validated once, at the door.

A config is YAML with one mapping per section (`model:`, `edit:`, `job:`, `storage:`, `metrics:`). Each section
maps one to one onto a frozen dataclass whose fields carry their own help text; `Config` lists the sections, and
that list is the only table of them (adding a section is adding a field to `Config`). Unknown sections and keys, wrong
types and bad values all raise `ConfigError`, whose message starts with the key path (`job.batch_size ...`).

    config = load_config("configs/tiny.yaml", ["job.batch_size=2", "edit.num_inference_steps=20"])
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffedit_batch.engine.settings import EditSettings


class ConfigError(ValueError):
    """A config that cannot be used. `key` is the offending key path (`edit.num_inference_steps`), when one is."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --- field types ---------------------------------------------------------------------------------------------
# Section fields use a small set of types: bool, int, float, str, tuple[str, ...] and `X | None` of those.
# `check_field_types` checks a section instance against its annotations, converting where the YAML value is a
# faithful spelling of the declared type (an int for a float, a list for a tuple).


def _is_optional(hint: Any) -> tuple[bool, Any]:
    """(True, X) for `X | None`, else (False, hint)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _convert(name: str, hint: Any, value: Any) -> Any:
    """`value` as type `hint`; raises ValueError naming `name` when it is not one."""
    optional, hint = _is_optional(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must not be null")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {value!r}")
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        if isinstance(value, (list, tuple)):
            return tuple(_convert(f"{name}[{i}]", item_hint, item) for i, item in enumerate(value))
        raise ValueError(f"{name} must be a list, got {value!r}")
    raise TypeError(f"{name}: unsupported config field type {hint!r}")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_field_types(instance: Any) -> None:
    """Check every field of a frozen section dataclass against its annotation, storing converted values.

    Messages name the field as `ClassName.field`; the config builder rewrites that to the key path.
    """
    hints = _type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        converted = _convert(f"{type(instance).__name__}.{f.name}", hints[f.name], value)
        if converted is not value:
            object.__setattr__(instance, f.name, converted)


def _accepts_str(hint: Any) -> bool:
    return _is_optional(hint)[1] is str


# --- value checks shared by the sections ------------------------------------------------------------------------


def _positive_int(instance: Any, name: str) -> None:
    value = getattr(instance, name)
    if value <= 0:
        raise ValueError(f"{type(instance).__name__}.{name} must be a positive integer, got {value!r}")


def _at_least(instance: Any, name: str, low: float, *, open_: bool = False) -> None:
    value = getattr(instance, name)
    if value != value or (value <= low if open_ else value < low):
        raise ValueError(f"{type(instance).__name__}.{name} must be {'>' if open_ else '>='} {low}, got {value!r}")


def _one_of(instance: Any, name: str, choices: Sequence[str]) -> None:
    value = getattr(instance, name)
    if value not in choices:
        raise ValueError(f"{type(instance).__name__}.{name} must be one of {', '.join(choices)}, got {value!r}")


def _non_empty(instance: Any, name: str) -> None:
    value = getattr(instance, name)
    if value is not None and not value.strip():
        raise ValueError(f"{type(instance).__name__}.{name} must not be empty")


# --- sections --------------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True)
class ModelConfig:
    """Which Stable Diffusion model to load, where, and how."""

    pretrained: str = field(
        default="stabilityai/stable-diffusion-2-1",
        metadata={
            "help": "Hugging Face hub id or local diffusers folder, loaded with from_pretrained (safetensors only). "
            "A relative folder path resolves against the current working directory."
        },
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit); null = the default branch."}
    )
    device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda | cuda:N; auto = cuda when available, else cpu."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto | float32 | float16 | bfloat16; auto = float16 on CUDA, float32 on CPU."},
    )
    resolution: int = field(
        default=768, metadata={"help": "Longer image side fed to the model, in pixels; a multiple of 8."}
    )
    max_unet_batch: int = field(
        default=16, metadata={"help": "Most UNet samples per forward call; bounds GPU memory."}
    )
    compile_unet: bool = field(default=False, metadata={"help": "torch.compile the UNet (the first batches are slow)."})
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
        check_field_types(self)
        _non_empty(self, "pretrained")
        _non_empty(self, "revision")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"ModelConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _one_of(self, "dtype", ("auto", "float32", "float16", "bfloat16"))
        _positive_int(self, "resolution")
        if self.resolution % 8:
            raise ValueError(f"ModelConfig.resolution must be a multiple of 8, got {self.resolution!r}")
        _positive_int(self, "max_unet_batch")


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
    progress_interval_s: float = field(default=30.0, metadata={"help": "Seconds between progress reports."})
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
    mode: str = field(
        default="edit",
        metadata={
            "help": "edit | noop; noop skips diffusion but keeps the whole data path (read, decode, "
            "batch, write), for data-path benchmarks."
        },
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        _positive_int(self, "batch_size")
        _positive_int(self, "num_actors")
        if self.max_actors is not None and self.max_actors < self.num_actors:
            raise ValueError(
                f"JobConfig.max_actors must be null or >= num_actors ({self.num_actors}), got {self.max_actors!r}"
            )
        _at_least(self, "gpus_per_actor", 0.0)
        _at_least(self, "cpus_per_actor", 0.0)
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"JobConfig.seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ValueError(f"JobConfig.max_failed_fraction must be in [0, 1], got {self.max_failed_fraction!r}")
        _at_least(self, "progress_interval_s", 0.0, open_=True)
        _positive_int(self, "max_image_pixels")
        _at_least(self, "decode_cpus", 0.0, open_=True)
        _at_least(self, "write_cpus", 0.0, open_=True)
        _positive_int(self, "max_tasks_in_flight_per_actor")
        _one_of(self, "mode", ("edit", "noop"))


@dataclass(frozen=True)
class StorageConfig:
    """Where inputs and outputs may live, and how writes are retried."""

    s3_endpoint_url: str | None = field(
        default=None,
        metadata={"help": "S3 endpoint URL (http:// or https://) for S3-compatible stores; null = AWS."},
    )
    s3_region: str | None = field(default=None, metadata={"help": "S3 region; null = from the environment."})
    allowed_schemes: tuple[str, ...] = field(
        default=("file", "s3", "gs"),
        metadata={"help": "URI schemes that manifests and outputs may use."},
    )
    write_retries: int = field(
        default=4, metadata={"help": "Retries of a failed output write, after the first try."}
    )
    retry_backoff_s: float = field(
        default=0.5, metadata={"help": "Base delay between write retries, in seconds."}
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.s3_endpoint_url is not None and not self.s3_endpoint_url.startswith(("http://", "https://")):
            raise ValueError(
                f"StorageConfig.s3_endpoint_url must start with http:// or https://, got {self.s3_endpoint_url!r}"
            )
        _non_empty(self, "s3_region")
        if not self.allowed_schemes:
            raise ValueError("StorageConfig.allowed_schemes must not be empty")
        for scheme in self.allowed_schemes:
            if not _SCHEME.fullmatch(scheme):
                raise ValueError(
                    f"StorageConfig.allowed_schemes must hold lower-case URI schemes such as s3, got {scheme!r}"
                )
        _at_least(self, "write_retries", 0)
        _at_least(self, "retry_backoff_s", 0.0)


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
        check_field_types(self)
        _non_empty(self, "clip_model")
        if not _DEVICE.fullmatch(self.clip_device):
            raise ValueError(f"MetricsConfig.clip_device must be auto, cpu, cuda or cuda:N, got {self.clip_device!r}")
        _positive_int(self, "clip_num_actors")
        _at_least(self, "clip_cpus_per_actor", 0.0)
        _at_least(self, "clip_gpus_per_actor", 0.0)


_CONCEPT_INSTRUCTION = (
    "Provide a caption for images containing a {concept}. "
    "The captions should be in English and should be no longer than 150 characters."
)


@dataclass(frozen=True)
class ConceptsConfig:
    """Concept prompts: Flan-T5 captions of a concept, averaged into one prompt embedding (engine.concepts)."""

    model: str = field(
        default="google/flan-t5-large",
        metadata={"help": "Seq2seq model (hub id or local folder, safetensors only) that writes the captions."},
    )
    num_captions: int = field(default=16, metadata={"help": "Captions sampled per concept, averaged into its prompt."})
    instruction: str = field(
        default=_CONCEPT_INSTRUCTION,
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
        check_field_types(self)
        _non_empty(self, "model")
        _positive_int(self, "num_captions")
        if "{concept}" not in self.instruction:
            raise ValueError(f"ConceptsConfig.instruction must contain {{concept}}, got {self.instruction!r}")
        _at_least(self, "temperature", 0.0, open_=True)
        _at_least(self, "top_k", 0)
        _positive_int(self, "max_new_tokens")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"ConceptsConfig.seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"ConceptsConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _one_of(self, "dtype", ("auto", "float32", "float16", "bfloat16"))
        _at_least(self, "gpus", 0.0)
        _at_least(self, "cpus", 0.0)


@dataclass(frozen=True)
class CaptionsConfig:
    """Inversion captions: BLIP captions of the input pictures (engine.captions)."""

    model: str = field(
        default="Salesforce/blip-image-captioning-base",
        metadata={"help": "BLIP captioning model (hub id or local folder, safetensors only)."},
    )
    prompt: str | None = field(
        default="a photograph of",
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
        check_field_types(self)
        _non_empty(self, "model")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("CaptionsConfig.prompt must not be empty (null = unconditional captions)")
        _positive_int(self, "max_new_tokens")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"CaptionsConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _one_of(self, "dtype", ("auto", "float32", "float16", "bfloat16"))
        _at_least(self, "gpus", 0.0)
        _at_least(self, "cpus", 0.0)
        _positive_int(self, "batch_size")


@dataclass(frozen=True)
class Config:
    """The whole job config. Each field is one YAML section; this class is the table of sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    edit: EditSettings = field(default_factory=EditSettings)
    job: JobConfig = field(default_factory=JobConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict of builtins (tuples as lists), YAML/JSON-serialisable; `config_from_dict` reads it back."""
        return {
            section: {
                f.name: _plain(getattr(getattr(self, section), f.name))
                for f in dataclasses.fields(getattr(self, section))
            }
            for section in SECTIONS
        }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _sections() -> dict[str, type]:
    hints = _type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


SECTIONS: dict[str, type] = _sections()
"""Section name -> section class, in YAML order; derived from `Config`'s fields."""


# --- building --------------------------------------------------------------------------------------------------


def _suggest(name: str, choices: Sequence[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(str(name), choices, n=1)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def _unknown_section(name: str) -> ConfigError:
    return ConfigError(
        f"unknown config section '{name}'{_suggest(name, list(SECTIONS))}; sections are {', '.join(SECTIONS)}",
        key=str(name),
    )


def _unknown_key(section: str, name: str) -> ConfigError:
    keys = [f.name for f in dataclasses.fields(SECTIONS[section])]
    return ConfigError(
        f"unknown config key '{section}.{name}'{_suggest(name, keys, prefix=section + '.')}", key=f"{section}.{name}"
    )


def _key_path_error(section: str, cls: type, error: ValueError) -> ConfigError:
    """Rewrite a section class's `ClassName.field ...` / `ClassName: ...` message to the key path."""
    message = str(error)
    match = re.match(rf"{re.escape(cls.__name__)}\.(\w+)", message)
    if match:
        key = f"{section}.{match.group(1)}"
        return ConfigError(key + message[match.end():], key=key)
    if message.startswith(cls.__name__ + ":"):
        return ConfigError(section + message[len(cls.__name__):], key=section)
    return ConfigError(f"{section}: {message}", key=section)


def _build_section(section: str, values: Any) -> Any:
    cls = SECTIONS[section]
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}", key=section)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in values:
        if name not in known:
            raise _unknown_key(section, name)
    hints = _type_hints(cls)
    try:
        # Convert before building, so classes that only check types (EditSettings) still get e.g. floats.
        kwargs = {name: _convert(f"{cls.__name__}.{name}", hints[name], value) for name, value in values.items()}
        return cls(**kwargs)
    except ValueError as error:
        raise _key_path_error(section, cls, error) from None


def config_from_dict(data: Mapping[str, Any] | None) -> Config:
    """Build and validate a `Config` from `{section: {key: value}}`; missing sections and keys take defaults.

    Raises ConfigError naming the key path of an unknown section or key, a wrong type or a bad value.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
    for section in data:
        if section not in SECTIONS:
            raise _unknown_section(section)
    return Config(**{section: _build_section(section, data.get(section)) for section in SECTIONS})


def apply_overrides(data: Mapping[str, Any] | None, overrides: Sequence[str]) -> dict[str, Any]:
    """`data` with `section.key=value` overrides applied in order (a copy). Values are parsed as YAML.

    A value that YAML reads as something other than a string, for a string key, stays the text as given
    (`model.revision=1234` is the string '1234'); `null` still means None.
    """
    result = dict(data or {})
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {override!r} must look like section.key=value (no '=' found)")
        section, dot, name = key.partition(".")
        if not dot or not section or not name or "." in name:
            raise ConfigError(f"override {override!r} must look like section.key=value, e.g. job.batch_size=4")
        if section not in SECTIONS:
            raise _unknown_section(section)
        if name not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            raise _unknown_key(section, name)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML: {error}", key=key) from None
        if _accepts_str(_type_hints(SECTIONS[section])[name]) and value is not None and not isinstance(value, str):
            value = text.strip()
        current = result.get(section) or {}
        if not isinstance(current, Mapping):
            raise ConfigError(f"config section '{section}' must be a mapping, got {current!r}", key=section)
        result[section] = {**current, name: value}
    return result


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None or an empty file = all defaults), apply `section.key=value` overrides, validate.

    Raises ConfigError: for a missing or unparsable file (naming it), an unknown section or key (naming it, with
    the closest known key), a malformed override, a wrong type or a bad value (naming the key path).
    """
    data: Any = None
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {data!r}")
    return config_from_dict(apply_overrides(data, overrides))


# --- reference docs --------------------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    optional, hint = _is_optional(hint)
    if typing.get_origin(hint) is tuple:
        name = f"list of {_type_name(typing.get_args(hint)[0])}"
    else:
        name = hint.__name__
    return f"{name} or null" if optional else name


def _default_text(f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return json.dumps(_plain(default))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference_markdown() -> str:
    """Markdown reference of every section and key (type, default, help), generated from the dataclasses.

    `docs/config-reference.md` is this text; a test keeps it current.
    """
    lines = [
        "# Config reference",
        "",
        "<!-- Generated by diffedit_batch.config.config_reference_markdown(); do not edit by hand. -->",
        "",
        "A config is a YAML file with one mapping per section. Every key is optional (the default applies);",
        "an unknown section or key is an error. Override any key on the command line with",
        "`--set section.key=value` (the value is parsed as YAML: `10`, `0.5`, `true`, `null`, `[a, b]`).",
        "Defaults below are written as YAML/JSON values.",
    ]
    for section, cls in SECTIONS.items():
        hints = _type_hints(cls)
        summary = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += ["", f"## `{section}`", "", f"{summary} (`{cls.__module__}.{cls.__name__}`)", ""]
        lines += ["| key | type | default | help |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            lines.append(
                f"| `{section}.{f.name}` | {_cell(_type_name(hints[f.name]))} | `{_cell(_default_text(f))}` "
                f"| {_cell(f.metadata.get('help', ''))} |"
            )
    return "\n".join(lines) + "\n"


def write_config_reference(path: str | Path = "docs/config-reference.md") -> None:
    """Regenerate the committed config reference."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(config_reference_markdown())
