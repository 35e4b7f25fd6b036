"""Which settings change an edit's pixels: the one rule behind every record's settings fingerprint.

`pixel_settings` picks them from the whole `Config`:

- `model` and `edit`: every key counts (a key added later counts by default, e.g. a separate VAE), except the
  operational keys named in `OPERATIONAL`: where the model runs (`device`), how much it takes at once
  (`max_unet_batch`: a row's result does not depend on its batch), how it is compiled and laid out in memory
  (`compile_unet`, `compile_mode`, `channels_last`) and `vae_slicing` (the same decode, one picture at a time).
  `dtype` counts (float16 and float32 give other pixels), and so does `vae_tiling` (tiles blend where they
  overlap). The model's family (`sd`, `sdxl`) is added when its `model_index.json` is at hand.
- `job`: only `mode` (noop writes the picture back). The job seed reaches an edit through its request's seed, which
  the request fingerprint holds; pool sizes, batch sizes and resources never count.
- `concepts` and `captions`: every key but their device and resources, and only for the edits that use them (an
  edit with a concept, an edit whose inversion prompt or source is a BLIP caption), only in edit mode: changing the
  Flan-T5 model does not touch an edit without concepts.
- `candidates`: what draws the candidates (`count`, `vary`, the seed draw), when there is more than one candidate
  per request, with `metrics.clip_model` when the selection uses CLIP scores (scores of another model are not
  recorded). The selection (`keep`, `rank_by`, `min`, `max`) and `keep_rejected` are no settings: a change
  re-selects among the recorded candidates by their recorded scores (`data.reselect`). With one candidate, nothing.
- never: `output` (how an edit is stored, JPEG quality included, not what it is), `storage`, `metrics` (they
  score an edit, they do not change it) but for the CLIP model that selects candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffedit_batch.data.fingerprints import settings_fingerprint

from .schema import Config

__all__ = ["CANDIDATES_SELECTION", "OPERATIONAL", "RunSettings", "model_family", "pixel_settings", "run_settings"]

# Section -> its keys that do not change pixels; every other key of these sections counts.
OPERATIONAL: dict[str, frozenset[str]] = {
    "model": frozenset({"device", "max_unet_batch", "compile_unet", "compile_mode", "channels_last", "vae_slicing"}),
    "edit": frozenset(),
    "concepts": frozenset({"device", "gpus", "cpus"}),
    "captions": frozenset({"device", "gpus", "cpus", "batch_size"}),
}
# Keys of `candidates` that select among the candidates (and say which pictures are written), never what they are:
# a change re-selects from the recorded scores, it is no settings change.
CANDIDATES_SELECTION = frozenset({"keep", "rank_by", "min", "max", "keep_rejected"})
# Sections of which only these keys count.
COUNTED: dict[str, tuple[str, ...]] = {"job": ("mode",)}


def pixel_settings(config: Config, *, concepts: bool = False, captions: bool = False,
                   family: str | None = None) -> dict[str, dict[str, Any]]:
    """The settings that change the pixels of an edit made under `config` (see the module docstring for the rule),
    as plain nested dicts: `concepts` / `captions` when the edit uses them, `family` the model's family if known."""
    whole = config.to_dict()
    settings = {name: {key: value for key, value in whole[name].items() if key not in OPERATIONAL[name]}
                for name in ("model", "edit")}
    if family is not None:
        settings["model"]["family"] = family
    for name, keys in COUNTED.items():
        settings[name] = {key: whole[name][key] for key in keys}
    if config.candidates.enabled:
        # The draws make the pixels, and the CLIP model the scores; which candidates are kept (and which pictures
        # are written) is chosen again from the recorded scores on a re-run (data.reselect), never an edit.
        candidates = {key: value for key, value in whole["candidates"].items() if key not in CANDIDATES_SELECTION}
        settings["candidates"] = candidates
        if config.candidates.scores_used & {"clip_directional", "clip_image", "clip_target_score"}:
            settings["candidates"] = {**candidates, "clip_model": config.metrics.clip_model}
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


def run_settings(config: Config) -> RunSettings:
    """The settings fingerprints of a run of `config`, its model's family read from the model's files if cheap."""
    family = config.model.family  # resolved from the model before the run (preflight.resolve_model_family)
    if family == "auto":
        family = model_family(config.model.pretrained, config.model.revision)
    fingerprints, settings = [], {}
    for concepts in (False, True):
        for captions in (False, True):
            chosen = pixel_settings(config, concepts=concepts, captions=captions, family=family)
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
