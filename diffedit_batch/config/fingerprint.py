"""Which settings change an edit's pixels: the one rule behind every record's settings fingerprint.

`pixel_settings` picks them from the whole `Config`:

- `model` and `edit`: every key counts (a key added later counts by default, e.g. a separate VAE), except the
  operational keys named in `OPERATIONAL`: where the model runs (`device`), how much it takes at once
  (`max_unet_batch`: a row's result does not depend on its batch), how it is compiled and laid out in memory
  (`compile_unet`, `compile_mode`, `channels_last`) and `vae_slicing` (the same decode, one picture at a time).
  `dtype` counts (float16 and float32 give other pixels), and so does `vae_tiling` (tiles blend where they
  overlap). The model's family (`sd`, `sdxl`) is added when its `model_index.json` is at hand. What the model *is*
  replaces how it is spelled when the run resolved it (`pipeline.model_identity`): `pretrained` and `vae` become
  a folder's files' digest or a hub id's commit, `revision` is folded into that.
- `job`: only `mode` (noop writes the picture back). The job seed reaches an edit through its request's seed, which
  the request fingerprint holds; pool sizes, batch sizes and resources never count.
- `concepts` and `captions`: every key but their device and resources, and only for the edits that use them (an
  edit with a concept, an edit whose inversion prompt or source is a BLIP caption), only in edit mode: changing the
  Flan-T5 model does not touch an edit without concepts.
- `candidates`: what draws the candidates (`count`, `vary`, the seed draw), when there is more than one candidate
  per request, with `metrics.clip_model` when the selection uses CLIP scores (scores of another model are not
  recorded). The selection (`keep`, `rank_by`, `min`, `max`) and `keep_rejected` are no settings: a change
  re-selects among the recorded candidates by their recorded scores (`data.reselect`). With one candidate, nothing,
  unless that single edit is held to floors or ceilings: they decide whether it is kept, and a single edit is not
  re-selected, so its `min` and `max` count.
- `region` when it is not the default, `output.paste_background` and `output.feather_px` when the background is
  pasted (both change pixels; counted only then, so the fingerprints of runs without them stay as they were).
- never: the rest of `output` (how an edit is stored, JPEG quality included, not what it is), `storage`, `metrics` (they
  score an edit, they do not change it) but for the CLIP model that selects candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffedit_batch.data.fingerprints import settings_fingerprint

from diffedit_batch.recipe.candidates import CLIP_SCORES

from .schema import Config

__all__ = ["CANDIDATES_SELECTION", "OPERATIONAL", "RunSettings", "model_family", "pixel_settings", "run_settings"]

# Section -> its keys that do not change pixels; every other key of these sections counts.
OPERATIONAL: dict[str, frozenset[str]] = {
    "model": frozenset({"device", "text_encoder_device", "max_unet_batch", "compile_unet", "compile_mode", "channels_last", "vae_slicing"}),
    "edit": frozenset(),
    "concepts": frozenset({"device", "gpus", "cpus"}),
    "captions": frozenset({"device", "gpus", "cpus", "batch_size"}),
}
# Model keys added after fingerprints existed whose null means "as before" (the family's default): counted only when
# set, so runs recorded before them keep their fingerprints.
UNSET_UNCOUNTED = ("max_sequence_length",)
# Keys of `candidates` that select among the candidates (and say which pictures are written), never what they are:
# a change re-selects from the recorded scores, it is no settings change.
CANDIDATES_SELECTION = frozenset({"keep", "rank_by", "min", "max", "keep_rejected"})
# Sections of which only these keys count.
COUNTED: dict[str, tuple[str, ...]] = {"job": ("mode",)}


def pixel_settings(config: Config, *, concepts: bool = False, captions: bool = False,
                   family: str | None = None, models: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The settings that change the pixels of an edit made under `config` (see the module docstring for the rule),
    as plain nested dicts: `concepts` / `captions` when the edit uses them, `family` the model's family if known,
    `models` the model keys as resolved (`ModelIdentities.settings()`: pretrained, revision, vae)."""
    whole = config.to_dict()
    settings = {name: {key: value for key, value in whole[name].items() if key not in OPERATIONAL[name]}
                for name in ("model", "edit")}
    for key in UNSET_UNCOUNTED:
        if settings["model"].get(key) is None:
            settings["model"].pop(key, None)
    if models is not None:
        settings["model"].update(models)
    if family is not None:
        settings["model"]["family"] = family
    for name, keys in COUNTED.items():
        settings[name] = {key: whole[name][key] for key in keys}
    if config.candidates.enabled or config.candidates.filters_single:
        # The draws make the pixels, and the CLIP model the scores; which candidates are kept (and which pictures
        # are written) is chosen again from the recorded scores on a re-run (data.reselect), never an edit. A single
        # edit held to floors is not re-selected: its floors count.
        candidates = {key: value for key, value in whole["candidates"].items() if key not in CANDIDATES_SELECTION}
        if config.candidates.filters_single:
            candidates.update({key: whole["candidates"][key] for key in ("min", "max")})
        if config.candidates.scores_used & set(CLIP_SCORES):
            candidates["clip_model"] = config.metrics.clip_model
        if "clip_label" in config.candidates.scores_used:
            candidates["label_template"] = config.prompts.label_template
        settings["candidates"] = candidates
    # Regions and the pasted background change pixels; counted only when not the defaults, so that the fingerprints
    # of runs that use neither stay what they were.
    if whole["region"] != Config().to_dict()["region"]:
        settings["region"] = whole["region"]
    if config.output.paste_background:
        settings["paste"] = {key: whole["output"][key] for key in ("paste_background", "feather_px")}
    if config.job.mode == "edit":
        for name, used in (("concepts", concepts), ("captions", captions)):
            if used:
                settings[name] = {key: value for key, value in whole[name].items() if key not in OPERATIONAL[name]}
    return settings


@dataclass(frozen=True)
class RunSettings:
    """A run's settings fingerprints, by what an edit uses (`by_use[2 * uses_concepts + uses_caption]`), and the
    settings behind each (for the run file, and to say what changed)."""

    by_use: tuple[str, str, str, str]
    settings: dict[str, dict]  # fingerprint -> pixel settings


def run_settings(config: Config, models: dict[str, Any] | None = None) -> RunSettings:
    """The settings fingerprints of a run of `config`, its model's family read from the model's files if cheap;
    `models`: the model keys as the run resolved them (see `pixel_settings`)."""
    family = config.model.family  # resolved from the model before the run (preflight.resolve_model_family)
    if family == "auto":
        family = model_family(config.model.pretrained, config.model.revision)
    fingerprints, settings = [], {}
    for concepts in (False, True):
        for captions in (False, True):
            chosen = pixel_settings(config, concepts=concepts, captions=captions, family=family, models=models)
            fingerprint = settings_fingerprint(chosen)
            fingerprints.append(fingerprint)
            settings[fingerprint] = chosen
    return RunSettings(tuple(fingerprints), settings)


def model_family(pretrained: str, revision: str | None = None) -> str | None:
    """`sd` or `sdxl` from the model's `model_index.json`: a local folder's, or a hub id's copy in the local cache.
    None when neither is at hand (no download: the id and revision then stand for the model) or the model is of
    another architecture (the preflight refuses it)."""
    from diffedit_batch.engine.model_index import UnsupportedModelError, family_of, read_model_index

    try:
        index = read_model_index(pretrained, revision, download=False)
        return None if index is None else family_of(index)
    except (UnsupportedModelError, OSError, ValueError):
        return None
