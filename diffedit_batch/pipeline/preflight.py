"""Checks in the driver before Ray starts: every model the run will load resolves, the output prefix can be written.

Without them a bad `model.pretrained` surfaced inside an edit actor a minute later, after the hub had been retried
five times, as hundreds of lines of tracebacks. Here each problem is one line naming the config key, the value,
what is wrong and the fix. No weights are loaded: file-system checks, the Hugging Face cache, and at most one
short request per hub id that is not cached (none when `HF_HUB_OFFLINE=1`). This module imports no Ray.

A model value is a local folder when the path exists (after `~` expansion), or when it cannot be a hub id; a hub id
is `name` or `org/name` of letters, digits, `.`, `_` and `-`, starting with a letter or digit, without `..` or `--`.
So `/abs/path`, `./x`, `~/x`, `../x` and `a/b/c` are always folders, and `org/name` that is not an existing path is a
hub id (as `from_pretrained` reads it): its message says both that no such path exists and why the hub id fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.fs as pafs

from diffedit_batch.config import Config
from diffedit_batch.engine.model_index import (
    FLUX,
    SD3,
    SDXL,
    UnsupportedModelError,
    family_of,
    is_sdxl_refiner,
    null_components,
    read_model_index,
)
from diffedit_batch.recipe.defaults import DEFAULT_MODEL, SD15_MODEL, SDXL_MODEL, WITHDRAWN_MODELS
from diffedit_batch.data.storage import StorageError, StorageOptions, file_type, redact_uri, resolve

__all__ = [
    "HUB_REQUEST_TIMEOUT_S",
    "HubModel",
    "PreflightError",
    "check_devices",
    "check_input_apart",
    "check_manifest_columns",
    "check_models",
    "check_output_prefix",
    "is_hub_id",
    "lookup_hub_model",
    "resolve_model_family",
]

HUB_REQUEST_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_PICKLED = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_TINY_MODELS = "build the tiny offline models with `diffedit-batch make-tiny-model models/tiny-sd --all`"
_CONVERT = ("convert them once, from a trusted source: load with from_pretrained(..., use_safetensors=False) and "
            "save_pretrained, which writes safetensors")


class PreflightError(Exception):
    """A model or output prefix the run cannot use; the message is one line, naming the config key and the fix."""


@dataclass(frozen=True)
class HubModel:
    """What the hub says about a model: its files (None when not listed), whether it is gated, and the commit its
    revision resolves to (None when not said)."""

    files: frozenset[str] | None
    gated: bool = False
    sha: str | None = None


HubLookup = Callable[[str, "str | None"], HubModel]


@dataclass(frozen=True)
class _Layout:
    """The files a loader reads. Each weights entry is (subfolder, stem): `config.json` and `stem.safetensors` (or the
    sharded `stem.safetensors.index.json`) in that subfolder."""

    name: str
    weights: tuple[tuple[str, str], ...]
    files: tuple[str, ...] = ()

    def required(self) -> list[tuple[str, ...]]:
        """Each requirement as alternatives: any one of them present satisfies it."""
        needs: list[tuple[str, ...]] = []
        for folder, stem in self.weights:
            needs.append((_join(folder, "config.json"),))
            needs.append((_join(folder, f"{stem}.safetensors"), _join(folder, f"{stem}.safetensors.index.json")))
        return needs + [(path,) for path in self.files]


# What engine/loading.py reads: model_index.json names the family, then each component loads on its own.
_STABLE_DIFFUSION = _Layout(
    "diffusers Stable Diffusion",
    weights=(("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")),
    files=("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"),
)
# SDXL's second text encoder and tokenizer, besides the above.
_SDXL_EXTRA = _Layout(
    "diffusers SDXL", weights=(("text_encoder_2", "model"),),
    files=("tokenizer_2/vocab.json", "tokenizer_2/merges.txt"),
)
# The flow transformers (engine/loading.py's _load_flow_components): no UNet, CLIP and T5 encoders.
_SD3 = _Layout(
    "diffusers SD3",
    weights=(("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"),
             ("text_encoder_2", "model"), ("text_encoder_3", "model")),
    files=("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
           "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_3/tokenizer_config.json"),
)
_FLUX = _Layout(
    "diffusers FLUX.1",
    weights=(("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"),
             ("text_encoder_2", "model")),
    files=("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
           "tokenizer_2/tokenizer_config.json"),
)
_FLOW_LAYOUTS = {SD3: _SD3, FLUX: _FLUX}
# A folder whose model_index.json names no family the engine drives: `_family_problem` says what it holds.
_UNSUPPORTED = _Layout("diffusers", weights=(), files=("model_index.json",))
_DIFFUSION_LAYOUTS = (_STABLE_DIFFUSION, _SD3, _FLUX, _UNSUPPORTED)
_SUPPORTED_MODELS = "a Stable Diffusion 1.x/2.x, SDXL base, SD 3/3.5 or FLUX.1-dev/-schnell model"
# A separate VAE (`model.vae`): a VAE folder, or a pipeline folder with vae/.
_VAE = _Layout("diffusers VAE", weights=(("", "diffusion_pytorch_model"),))
# What the recipe's Flan-T5, BLIP and CLIP loaders read (their tokenizer and processor files vary by model).
_TRANSFORMERS = _Layout("transformers", weights=(("", "model"),))


@dataclass(frozen=True)
class _Model:
    key: str  # the config key, e.g. model.pretrained
    value: str
    revision: str | None
    layout: _Layout
    tiny: bool  # `make-tiny-model --all` builds a stand-in for this key

    @property
    def where(self) -> str:
        revision = f" (revision {self.revision})" if self.revision else ""
        return f"{self.key}: {self.value!r}{revision}"

    def fix(self, fix: str) -> str:
        return f"{fix}, or {_TINY_MODELS}" if self.tiny else fix


def is_hub_id(value: str) -> bool:
    """Whether `value` has the form of a Hugging Face hub id (`name` or `org/name`)."""
    return bool(_HUB_ID.fullmatch(value)) and ".." not in value and "--" not in value


def check_models(config: Config, *, stable_diffusion: bool = True, concepts: bool = False,
                 captions: bool | None = None, clip: bool = True, hub_lookup: HubLookup | None = None) -> None:
    """Raise PreflightError unless every model the run loads resolves; all bad models in one line, joined by "; ".

    Checked, each only when its flag is on:
    - `stable_diffusion`: `model.pretrained` (with `model.revision`), in `edit` mode (`noop` loads no model);
    - `concepts`: `concepts.model`, in `edit` mode. Default False: the config alone never needs it, concept rows of
      the manifest do (known after the plan; pass `concepts=True` then);
    - `captions`: `captions.model`, in `edit` mode. Default None = `captions.caption_inversion` (the config
      captions every picture); rows without a source prompt need it too (known after the plan);
    - `clip`: `metrics.clip_model` when it is set (CLIP scores run in `noop` mode too).
    A local folder must hold what the loaders read, with safetensors weights. A hub id passes when its files are in
    the Hugging Face cache; else, offline, it fails; online, one request (HUB_REQUEST_TIMEOUT_S, no retries) through
    `hub_lookup(repo_id, revision) -> HubModel` (default `lookup_hub_model`; tests pass their own).
    """
    if captions is None:
        captions = config.captions.caption_inversion
    edit = config.job.mode == "edit"
    models = []
    if edit and stable_diffusion:
        models.append(_Model("model.pretrained", config.model.pretrained, config.model.revision, _STABLE_DIFFUSION,
                             tiny=True))
        if config.model.vae is not None:
            models.append(_Model("model.vae", config.model.vae, None, _VAE, tiny=False))
    if edit and concepts:
        models.append(_Model("concepts.model", config.concepts.model, None, _TRANSFORMERS, tiny=True))
    if edit and captions:
        models.append(_Model("captions.model", config.captions.model, None, _TRANSFORMERS, tiny=True))
    if clip and config.metrics.clip_model is not None:
        models.append(_Model("metrics.clip_model", config.metrics.clip_model, None, _TRANSFORMERS, tiny=False))
    problems = {model.key: problem for model in models if (problem := _problem(model, hub_lookup or lookup_hub_model))}
    if edit and stable_diffusion and "model.pretrained" not in problems and "model.vae" not in problems:
        problem = _channels_problem(models[0], models[1] if config.model.vae is not None else None)
        if problem:
            problems["channels"] = problem
    if problems:
        raise PreflightError(_one_line("; ".join(problems.values())))


def _problem(model: _Model, hub_lookup: HubLookup) -> str | None:
    path = os.path.expanduser(model.value)
    if os.path.exists(path) or not is_hub_id(model.value):
        if model.layout is _VAE and os.path.isdir(os.path.join(path, "vae")):
            path = os.path.join(path, "vae")
        model = _flow_layout(model, path)
        if model.layout in _DIFFUSION_LAYOUTS:
            problem = _revision_problem(model) or _index_problem(model, path)
            if problem:
                return problem
        problem = _local_problem(model, path)
        if problem is None and model.layout in _DIFFUSION_LAYOUTS:
            return _family_problem(model, path)
        return problem
    if model.value in WITHDRAWN_MODELS and _missing_from_cache(model):
        return withdrawn_problem(model.key, model.value)
    model = _flow_layout(model, None)
    problem = _hub_problem(model, hub_lookup)
    if problem is None and model.layout in _DIFFUSION_LAYOUTS:
        return _index_problem(model, None) or _family_problem(model, None)
    return problem


def _revision_problem(model: _Model) -> str | None:
    """A revision names a commit of a hub repository: a local folder has none to choose."""
    if model.revision is None:
        return None
    return (f"model.revision: {model.revision!r} is set but {model.key} {model.value!r} is a local folder, which has "
            f"no revisions; remove model.revision, or set {model.key} to a Hugging Face hub id")


def _index_problem(model: _Model, folder: str | None) -> str | None:
    """What the model's model_index.json says the engine cannot load: an SDXL refiner, a component listed as
    `[null, null]`. None when it is not at hand (or unreadable: the layout and family checks name that)."""
    try:
        index = read_model_index(folder or model.value, model.revision, download=False)
    except (UnsupportedModelError, OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    if is_sdxl_refiner(index):
        return (f"{model.where} is an SDXL refiner ({index.get('_class_name', 'a pipeline')} with only the second "
                f"text encoder), which refines an SDXL base model's pictures and cannot edit on its own; set "
                f"{model.key} to the SDXL base model it belongs to (e.g. {SDXL_MODEL})")
    nulls = null_components(index)
    if nulls:
        listed = ", ".join(f"{name}: [null, null]" for name in nulls)
        return (f"{model.where} has a model_index.json that lists {listed} (a component without a class, which no "
                f"loader can build); " + model.fix(
                    f"save the complete pipeline there with save_pretrained, or remove those entries from its "
                    f"model_index.json if the model has no such component"))
    return None


# UNets that take more than the latents, by their extra input channels over the VAE's latent channels (an
# InstructPix2Pix UNet takes twice the latents: _PIX2PIX).
_UNET_VARIANTS = {5: "an inpainting UNet ({channels} input channels: the latents, a mask and the masked picture's "
                     "latents)",
                  1: "a depth-to-image UNet ({channels} input channels: the latents and a depth map)"}
_PIX2PIX = "an InstructPix2Pix UNet ({channels} input channels: the latents and the source picture's latents)"


# Flow transformers by class: how many input channels each takes per VAE latent channel (FLUX.1 packs 2x2 latents).
_TRANSFORMER_PACKING = {"SD3Transformer2DModel": 1, "FluxTransformer2DModel": 4}


def _channels_problem(model: _Model, vae: _Model | None) -> str | None:
    """The UNet's input channels against the latent channels of the VAE that will decode them: the model's own
    (naming an inpainting, depth or InstructPix2Pix UNet), and `model.vae` when set (naming model.vae); on SD3 and
    FLUX.1 the transformer's, per latent channel (FLUX.1 packs 2x2 latents: 4 each). None when a config is not at
    hand (a hub id not cached yet) or does not say."""
    unet = _component_config(model, "unet")
    if unet is None:
        transformer = _component_config(model, "transformer")
        if transformer is not None and transformer.get("_class_name") in _TRANSFORMER_PACKING:
            return _transformer_channels_problem(model, vae, transformer)
    own = _component_config(model, "vae")
    channels = unet.get("in_channels") if unet else None
    own_latents = own.get("latent_channels") if own else None
    if not isinstance(channels, int):
        return None
    if isinstance(own_latents, int) and channels != own_latents:
        variant = _UNET_VARIANTS.get(channels - own_latents)
        if channels == 2 * own_latents:
            variant = _PIX2PIX
        what = (variant or "a UNet with {channels} input channels").format(channels=channels)
        return (f"{model.where} has {what}, but its VAE has {own_latents} latent channels; DiffEdit needs a "
                f"text-to-image UNet (as many input channels as latent channels): " + model.fix(
                    f"set {model.key} to the text-to-image model it was made from"))
    if vae is None:
        return None
    separate = _component_config(vae, None)
    latents = separate.get("latent_channels") if separate else None
    if isinstance(latents, int) and latents != channels:
        return (f"{vae.where} has {latents} latent channels but the UNet of {model.where} takes {channels}; set "
                f"model.vae to a VAE of that model's family ({channels} latent channels), or remove model.vae")
    return None


def _transformer_channels_problem(model: _Model, vae: _Model | None, transformer: dict) -> str | None:
    """`_channels_problem` of an SD3 or FLUX.1 folder: its transformer's input channels against its own VAE's
    latent channels (a FLUX.1 Fill, Canny or Depth transformer takes more), and against `model.vae`'s."""
    packing = _TRANSFORMER_PACKING[transformer["_class_name"]]
    channels = transformer.get("in_channels")
    if not isinstance(channels, int):
        return None
    own = _component_config(model, "vae")
    own_latents = own.get("latent_channels") if own else None
    if isinstance(own_latents, int) and channels != packing * own_latents:
        return (f"{model.where} has a {transformer['_class_name']} with {channels} input channels, but its VAE's "
                f"{own_latents} latent channels make {packing * own_latents}; DiffEdit needs a text-to-image "
                f"transformer (a FLUX.1 Fill, Canny or Depth one also takes a conditioning picture): "
                + model.fix(f"set {model.key} to {_SUPPORTED_MODELS}"))
    separate = _component_config(vae, None) if vae is not None else None
    latents = separate.get("latent_channels") if separate else None
    if isinstance(latents, int) and packing * latents != channels:
        return (f"{vae.where} has {latents} latent channels but the transformer of {model.where} takes "
                f"{channels // packing}; set model.vae to a VAE of that model's family ({channels // packing} latent "
                f"channels), or remove model.vae")
    return None


def _component_config(model: _Model, subfolder: str | None) -> dict | None:
    """A component's config.json (a VAE model: the folder's, or its vae/'s), from a local folder or the Hugging
    Face cache; None when not at hand or unreadable."""
    folder = os.path.expanduser(model.value)
    names = [_join(subfolder, "config.json")] if subfolder else ["vae/config.json", "config.json"]
    for name in names:
        if os.path.isdir(folder):
            path = os.path.join(folder, name)
        else:
            from huggingface_hub import try_to_load_from_cache

            try:
                path = try_to_load_from_cache(model.value, name, revision=model.revision)
            except ValueError:
                return None
        if not isinstance(path, str) or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                config = json.load(file)
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None
    return None


def _flow_layout(model: _Model, folder: str | None) -> _Model:
    """`model` checked against the SD3 or FLUX.1 layout when its model_index.json (the folder's, or a cached hub
    id's) names a flow pipeline whose components are all there; else as it is (a partial or refused flow folder
    then fails in `_family_problem`, naming what it found and what it lacks)."""
    if model.layout is not _STABLE_DIFFUSION:
        return model
    try:
        index = read_model_index(folder or model.value, model.revision, download=False)
        family = family_of(index, where=model.where) if index is not None else None
    except Exception:  # noqa: BLE001 (read again, and reported, by _family_problem)
        if folder is not None and os.path.isfile(os.path.join(folder, "model_index.json")):
            return dataclasses.replace(model, layout=_UNSUPPORTED)
        return model
    return dataclasses.replace(model, layout=_FLOW_LAYOUTS[family]) if family in _FLOW_LAYOUTS else model


def _hub_flow_layout(model: _Model, files: frozenset) -> _Model:
    """For an uncached hub id: the SD3 or FLUX.1 layout when the hub's file list shows a transformer."""
    if model.layout is not _STABLE_DIFFUSION or "transformer/config.json" not in files:
        return model
    return dataclasses.replace(model, layout=_SD3 if "text_encoder_3/config.json" in files else _FLUX)


def withdrawn_problem(key: str, value: str) -> str:
    """The one line for a hub id that was withdrawn from the hub: which id to use instead."""
    instead = WITHDRAWN_MODELS[value]
    mirror = " (an unofficial community mirror of SD 2.1 with the same files)" if instead == DEFAULT_MODEL else ""
    return (f"{key}: {value!r} was withdrawn from the Hugging Face hub (it answers 404); set {key} to "
            f"{instead}{mirror}, or to {SD15_MODEL} (512 px) or {SDXL_MODEL} (1024 px)")


def _family_problem(model: _Model, folder: str | None) -> str | None:
    """A diffusion model folder or cached hub id must be SD 1.x/2.x, SDXL base, SD3 or FLUX.1; SDXL's extra files
    must be there. A hub id whose model_index.json is not cached was listed by the hub: its family is read when the
    run starts."""
    try:
        index = read_model_index(folder or model.value, model.revision, download=False)
        if index is None:
            return None
        family = family_of(index, where=model.where)
    except UnsupportedModelError as error:
        return f"{error}; " + model.fix(f"set {model.key} to {_SUPPORTED_MODELS}")
    if family != SDXL:
        return None
    extra = _Model(model.key, model.value, model.revision, _SDXL_EXTRA, model.tiny)
    if folder is not None:
        return _local_problem(extra, folder)
    missing = _missing_from_cache(extra)
    if missing:
        return (f"{model.where} is an SDXL model whose {_listing(missing)} the Hugging Face cache lacks; "
                f"download it whole (`hf download {model.value}`) or point {model.key} at a local folder")
    return None


def resolve_model_family(config: Config) -> Config:
    """`config` with `model.family` read from the model's model_index.json when it is `auto` (the model's aspect
    buckets and settings depend on it). In `edit` mode an unreadable or unsupported model, or a set family that
    disagrees with the model, is a PreflightError naming `model.pretrained` or `model.family`; in `noop` mode (no
    model loads) a family that cannot be read without a download stays `auto`."""
    model = config.model
    edit = config.job.mode == "edit"
    where = f"model.pretrained: {model.pretrained!r}"
    try:
        index = read_model_index(model.pretrained, model.revision, download=edit)
        family = family_of(index, where=where) if index is not None else None
    except UnsupportedModelError as error:
        if not edit:
            return config
        raise PreflightError(_one_line(f"{error}; set model.pretrained to {_SUPPORTED_MODELS}")) from None
    except Exception as error:  # noqa: BLE001 (the hub client's failures: one line, the fix)
        if not edit or model.family != "auto":  # a family set by hand stands when the model cannot tell
            return config
        raise PreflightError(_one_line(
            f"{where}: its model_index.json cannot be read ({type(error).__name__}: {error}); run where the hub is "
            "reachable, or set model.family (sd, sdxl, sd3 or flux) and have the model in the Hugging Face cache")) from None
    if family is None:
        return config
    if model.family not in ("auto", family):
        raise PreflightError(f"model.family is {model.family!r} but {model.pretrained} is an {family} model; set "
                             f"model.family to {family} or auto")
    try:  # the model's own checks again, with its family: SD3's and FLUX.1's buckets are multiples of 16 px
        resolved = dataclasses.replace(model, family=family)
    except ValueError as error:
        raise PreflightError(_one_line(f"{str(error).replace('ModelConfig.', 'model.')} on {model.pretrained} (an "
                                       f"{family} model)")) from None
    return dataclasses.replace(config, model=resolved)


# --- local folders ----------------------------------------------------------------------------


def _local_problem(model: _Model, folder: str) -> str | None:
    where, layout = model.where, model.layout
    if not os.path.exists(folder):
        return f"{where} does not exist; " + model.fix(
            f"set {model.key} to a local {layout.name} folder or a Hugging Face hub id")
    if not os.path.isdir(folder):
        if folder.endswith((".safetensors", *_PICKLED)):
            return (f"{where} is a single-file checkpoint, not a {layout.name} folder; convert it once (diffusers' "
                    f"from_single_file(...).save_pretrained(folder)) and set {model.key} to that folder")
        return f"{where} is a file, not a model folder; set {model.key} to a local {layout.name} folder"
    missing, pickled = [], []
    for alternatives in layout.required():
        if any(os.path.isfile(os.path.join(folder, path)) for path in alternatives):
            if alternatives[-1].endswith(".index.json"):
                missing += _missing_shards(folder, alternatives)
            continue
        missing.append(alternatives[0])
        if alternatives[0].endswith(".safetensors"):
            pickled += _pickled_files(folder, os.path.dirname(alternatives[0]))
    if pickled:
        return (f"{where} has pickled weights only ({', '.join(pickled)}) and only safetensors are loaded; "
                + model.fix(_CONVERT))
    if missing:
        return (f"{where} is not a complete {layout.name} folder: no {_listing(missing)}; "
                + model.fix(f"save the model there with save_pretrained, or set {model.key} to a complete folder or "
                            "a Hugging Face hub id"))
    return None


def _missing_shards(folder: str, alternatives: tuple[str, ...]) -> list[str]:
    """The shards that a sharded model's index names and the folder lacks (none when only the single file is
    there)."""
    single, index = alternatives
    if os.path.isfile(os.path.join(folder, single)):
        return []
    try:
        with open(os.path.join(folder, index), encoding="utf-8") as file:
            shards = sorted(set(json.load(file)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [f"readable {index}"]
    subfolder = os.path.dirname(index)
    return [_join(subfolder, shard) for shard in shards if not os.path.isfile(os.path.join(folder, subfolder, shard))]


def _pickled_files(folder: str, subfolder: str) -> list[str]:
    try:
        names = sorted(os.listdir(os.path.join(folder, subfolder)))
    except OSError:
        return []
    return [_join(subfolder, name) for name in names if name.endswith(_PICKLED)]


# --- hub ids ----------------------------------------------------------------------------------


def _hub_problem(model: _Model, hub_lookup: HubLookup) -> str | None:
    from huggingface_hub import constants

    missing = _missing_from_cache(model)
    if not missing:
        return None  # in the local cache: from_pretrained finds it without the hub
    where = f"{model.where} is not a local folder (no such path)"
    download = f"`hf download {model.value}{f' --revision {model.revision}' if model.revision else ''}`"
    if constants.is_offline_mode():
        cached = "" if len(missing) == len(model.layout.required()) else f" (it lacks {_listing(missing)})"
        return (f"{where}, nor in the Hugging Face cache{cached}, and HF_HUB_OFFLINE=1: " + model.fix(
            f"download it where the hub is reachable ({download}) or point {model.key} at a local folder"))
    try:
        answer = hub_lookup(model.value, model.revision)
    except Exception as error:  # noqa: BLE001 (every failure of the one request becomes the message)
        reason, fix = _hub_failure(model, error)
        return f"{where}, and {reason}; " + model.fix(fix)
    if answer.files is not None:
        model = _hub_flow_layout(model, answer.files)
        needs = model.layout.required()
        absent = [alternatives[0] for alternatives in needs if not any(path in answer.files for path in alternatives)]
        pickled = sorted(name for name in answer.files if name.endswith(_PICKLED)
                         and os.path.dirname(name) in {os.path.dirname(path) for path in absent})
        if pickled:
            return (f"{model.where} has pickled weights only on the Hugging Face hub ({_listing(pickled)}) and only "
                    f"safetensors are loaded; " + model.fix(f"choose a revision or model with safetensors weights, "
                                                            f"or {_CONVERT} into a local folder"))
        if absent:
            return (f"{model.where} on the Hugging Face hub is not a {model.layout.name} model: no "
                    f"{_listing(absent)}; " + model.fix(f"set {model.key} to a {model.layout.name} model"))
    if answer.gated and _token() is None:
        return (f"{model.where} is a gated model and no Hugging Face token is set; accept its terms on the hub and set "
                f"HF_TOKEN (or `hf auth login`), or point {model.key} at a local folder")
    return None


def _missing_from_cache(model: _Model) -> list[str]:
    """The required files the Hugging Face cache lacks (a sharded model counts as cached by its index)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(path: str) -> bool:
        return isinstance(try_to_load_from_cache(model.value, path, revision=model.revision), str)

    return [alternatives[0] for alternatives in model.layout.required() if not any(map(cached, alternatives))]


def lookup_hub_model(repo_id: str, revision: str | None = None) -> HubModel:
    """Ask the hub once for a model's files (no retries): `HfApi.model_info`, in a thread bounded by
    HUB_REQUEST_TIMEOUT_S (so a DNS lookup that hangs is bounded too). Raises what the hub client raises, or
    TimeoutError."""
    from huggingface_hub import HfApi

    outcome: dict = {}

    def ask() -> None:
        try:
            outcome["info"] = HfApi().model_info(repo_id, revision=revision, timeout=HUB_REQUEST_TIMEOUT_S)
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    thread = threading.Thread(target=ask, name="preflight-hub", daemon=True)
    thread.start()
    thread.join(HUB_REQUEST_TIMEOUT_S + 1)
    if thread.is_alive():
        raise TimeoutError(f"no answer in {HUB_REQUEST_TIMEOUT_S:g} s")
    if "error" in outcome:
        raise outcome["error"]
    info = outcome["info"]
    files = None if info.siblings is None else frozenset(sibling.rfilename for sibling in info.siblings)
    return HubModel(files=files, gated=bool(info.gated), sha=getattr(info, "sha", None))


def _hub_failure(model: _Model, error: Exception) -> tuple[str, str]:
    """(what went wrong, the fix) for a failed hub request."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = f"point {model.key} at a local folder"
    if isinstance(error, GatedRepoError):
        return ("the model is gated and this token has no access to it",
                f"accept its terms on the hub and set HF_TOKEN to a token that has access, or {local}")
    if isinstance(error, RevisionNotFoundError):
        return (f"the Hugging Face hub has no revision {model.revision!r} of it",
                f"set model.revision to a branch, tag or commit of {model.value}")
    if isinstance(error, RepositoryNotFoundError):
        return ("the Hugging Face hub has no such model (or it is private: set HF_TOKEN)",
                f"check the spelling, or {local}")
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return (f"the Hugging Face hub answered HTTP {status or '?'}", f"try again later, or {local}")
    detail = str(error).splitlines()[0].strip() if str(error).strip() else ""
    return (f"the Hugging Face hub at {constants.ENDPOINT} cannot be reached ({type(error).__name__}"
            f"{': ' + detail if detail else ''})",
            f"run where the hub is reachable, or with the model in the Hugging Face cache and HF_HUB_OFFLINE=1, or "
            f"{local}")


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


# --- devices ----------------------------------------------------------------------------------


def check_devices(config: Config, *, local: bool, stable_diffusion: bool = True, concepts: bool = False,
                  captions: bool | None = None, clip: bool = True) -> None:
    """Raise PreflightError (one line naming each key) when a model is set to a CUDA device this run cannot have.

    Only for a `local` run (Ray in this process, so its actors see this machine's devices): a driver that joins a
    cluster cannot see its workers' GPUs, and the placement check covers those. The flags select the models as in
    `check_models`. `auto` always passes; torch is imported only when some key names CUDA.
    """
    if not local:
        return
    if captions is None:
        captions = config.captions.caption_inversion
    edit = config.job.mode == "edit"
    keys = [("model.device", config.model.device, edit and stable_diffusion),
            ("model.text_encoder_device", config.model.text_encoder_device or "auto", edit and stable_diffusion),
            ("concepts.device", config.concepts.device, edit and concepts),
            ("captions.device", config.captions.device, edit and captions),
            ("metrics.clip_device", config.metrics.clip_device, clip and config.metrics.clip_model is not None)]
    wanted = [(key, device) for key, device, used in keys if used and device.startswith("cuda")]
    if not wanted:
        return
    available, count = _cuda_devices()
    problems = []
    for key, device in wanted:
        index = int(device.partition(":")[2] or 0)
        if not available:
            problems.append(f"{key}: {device!r}, but this machine has no CUDA device (torch sees none); set {key}=auto "
                            "(or cpu), or run where a GPU is")
        elif index >= count:
            problems.append(f"{key}: {device!r}, but this machine has {count} CUDA device(s) (cuda:0 to "
                            f"cuda:{count - 1}); set {key}=cuda or auto")
    if problems:
        raise PreflightError(_one_line("; ".join(problems)))


def _cuda_devices() -> tuple[bool, int]:
    """(whether CUDA is available, how many devices), as torch sees them here."""
    import torch

    available = torch.cuda.is_available()
    return available, torch.cuda.device_count() if available else 0


# --- the manifest's columns --------------------------------------------------------------------


def check_manifest_columns(config: Config, columns: list[str]) -> None:
    """Raise PreflightError (one line) when the config names a column the manifest (`columns`, from its schema)
    lacks: a placeholder of a prompt template (`{caption}` is the BLIP caption unless a column has that name),
    `augment.balance_by`, or the column of `region.boxes_from`."""
    from diffedit_batch.data.templates import unknown_placeholders

    prompts = config.prompts
    problems = []
    templates = {"prompts.source": [prompts.source] if prompts.source else [],
                 "prompts.targets": list(prompts.targets),
                 "prompts.label_template": [prompts.label_template] if prompts.label_template else []}
    for key, texts in templates.items():
        for name in unknown_placeholders(texts, columns):
            problems.append(f"{key} has placeholder {{{name}}}, which is not a manifest column")
    if prompts.label_template and "caption" == prompts.label_column and "caption" not in columns:
        problems.append("prompts.label_template must name the label column, not {caption}")
    named = [("augment.balance_by", config.augment.balance_by),
             ("region.boxes_from", config.region.boxes_from.split(".")[0] if config.region.boxes_from else None)]
    for key, column in named:
        if column is not None and column not in columns:
            problems.append(f"{key} names column {column!r}, which is not a manifest column")
    if problems:
        raise PreflightError(_one_line("; ".join(problems) + f" (the manifest's columns: {', '.join(columns)})"))


# --- the output prefix -------------------------------------------------------------------------


def check_output_prefix(output_prefix: str, options: StorageOptions) -> None:
    """Raise PreflightError (one line naming --output) when the output prefix cannot be used.

    Any store: it must not be an existing file (object). A local prefix must also be writable: the prefix, or when
    it does not exist yet its nearest existing parent, must be a folder where a file can be created (os.access,
    then a temporary file created and removed). Object-store writes are not probed here.
    """
    where = f"--output {redact_uri(output_prefix)}"
    try:
        filesystem, path = resolve(output_prefix, options)
        kind = file_type(output_prefix, options)
    except StorageError as error:
        raise PreflightError(_one_line(f"{where}: {error}; check the prefix and the storage section")) from None
    if kind == pafs.FileType.File:
        raise PreflightError(_one_line(f"{where} is a file; give --output a folder (or an s3:// / gs:// prefix) that "
                                       "is not a file"))
    if not isinstance(filesystem, pafs.LocalFileSystem):
        return  # object stores: the first write (the run lease) is the probe
    folder = path
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    created = "" if folder == path else f"it would be created under {folder}, which "
    if not os.path.isdir(folder):
        raise PreflightError(_one_line(f"{where}: {created or f'{folder} '}is a file, so no folder can be created "
                                       "there; choose another --output"))
    reason = None
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "no write permission"
    else:
        try:
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".diffedit-preflight-")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            reason = error.strerror or type(error).__name__
    if reason:
        raise PreflightError(_one_line(f"{where}: {created or f'{folder} '}is not writable ({reason}); choose a "
                                       "writable --output or fix its permissions"))


def check_input_apart(manifest_uri: str, output_prefix: str, options: StorageOptions) -> None:
    """Raise PreflightError (one line) when `--output` is `--input`, or one lies inside the other: a run would
    read its own records (PREFIX/manifest/*.parquet) as manifest files, or write into the manifest's folder.
    Local paths are compared after `~`, `.`/`..` and symlinks are resolved; object-store URIs by bucket and key."""
    try:
        manifest = _comparable(manifest_uri, options)
        output = _comparable(output_prefix, options)
    except StorageError:
        return  # the manifest and output checks name a bad URI
    if manifest[0] != output[0]:
        return
    where = f"--output {redact_uri(output_prefix)}"
    if manifest[1] == output[1]:
        relation = "is the --input"
    elif _inside(output[1], manifest[1]):
        relation = f"is inside --input {redact_uri(manifest_uri)}"
    elif _inside(manifest[1], output[1]):
        relation = f"holds --input {redact_uri(manifest_uri)}"
    else:
        return
    raise PreflightError(f"{where} {relation}: a run would read its own records as manifest rows; choose an "
                         "output prefix outside the input, and an input outside the output")


def _comparable(uri: str, options: StorageOptions) -> tuple[str, str]:
    """(the store, the path) of a URI: a local path resolved as the file system sees it."""
    filesystem, path = resolve(os.path.expanduser(uri) if "://" not in uri else uri, options)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return "file", os.path.realpath(path)
    return uri.split("://", 1)[0], path.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


# --- text -------------------------------------------------------------------------------------


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _listing(paths: list[str], most: int = 4) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
