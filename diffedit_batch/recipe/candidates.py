"""Candidates: several edits tried per request with drawn settings, scored, filtered by floors, the best kept.

The dataset recipes that made the known editing sets over-generate and filter (InstructPix2Pix: many candidates per
prompt pair, kept by CLIP directional similarity above floors). Here a request's candidates differ in the settings
the config's `candidates.vary` draws; they go to one engine call, where a picture's candidates share its mask
predictions and its inversion (`DiffEditEngine.edit` with one settings object per row).

- `draw_candidates`: the candidates of one request, deterministic from the request's seed and each candidate's
  index (a re-run draws the same ones, whatever else is in its batch).
- `select_candidates`: which candidates of one request are kept, and why the others are not.
Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffedit_batch.config.fields import convert
from diffedit_batch.data.records import candidate_id
from diffedit_batch.engine.settings import EditSettings
from diffedit_batch.seeds import SEED_LIMIT

__all__ = ["SCORES", "Candidate", "candidate_id", "check_vary", "draw_candidates", "select_candidates"]

# Scores a candidate can be ranked by or held to a floor (or ceiling) of; higher is better for all but mask_coverage,
# which has no better direction (ceil it to refuse masks that cover the picture, floor it to refuse empty ones).
SCORES = ("clip_directional", "clip_image", "clip_target_score", "clip_label", "mask_coverage", "background_psnr",
          "background_ssim")
# clip_label: CLIP's zero-shot probability of the row's class among all classes of its label column
CLIP_SCORES = ("clip_directional", "clip_image", "clip_target_score", "clip_label")
_INT_SETTINGS = {f.name for f in dataclasses.fields(EditSettings) if f.type in ("int", int)}
_BOOL_SETTINGS = {f.name for f in dataclasses.fields(EditSettings) if f.type in ("bool", bool)}
VARIABLE = tuple(f.name for f in dataclasses.fields(EditSettings)) + ("seed",)
_HINTS = {f.name: {"int": int, "float": float, "bool": bool}.get(f.type, f.type) for f in dataclasses.fields(EditSettings)}


@dataclass(frozen=True)
class Candidate:
    """One candidate of a request: its index, settings, seed and what was drawn (setting -> value)."""

    index: int
    settings: EditSettings
    seed: int
    drawn: dict[str, Any]

    def drawn_json(self) -> str:
        return json.dumps(self.drawn, sort_keys=True)


def check_vary(vary: Mapping[str, Any], base: EditSettings) -> None:
    """Raise ValueError naming the setting for a `candidates.vary` that cannot be drawn: an unknown setting, a range
    that is not two numbers low <= high, an empty choice list, or a value `EditSettings` refuses."""
    for name, spec in vary.items():
        if name not in VARIABLE:
            raise ValueError(f"vary.{name} is not an edit setting (one of {', '.join(VARIABLE)})")
        if name == "seed":
            if not isinstance(spec, bool):
                raise ValueError(f"vary.seed must be true or false, got {spec!r}")
            continue
        values = _extremes(name, spec)
        for value in values:
            # as the edit section's own value is read (an integer within int64, a finite number), then as
            # EditSettings checks it
            value = convert(f"vary.{name}", _HINTS[name], value)
            try:
                base.replace(**{name: value})
            except (TypeError, ValueError) as error:
                raise ValueError(f"vary.{name}: {value!r} is not a valid value ({error})") from None


def _choices(spec: Any) -> list | None:
    if isinstance(spec, Mapping):
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ValueError("must be [low, high], a list of choices, or {choices: [...]}")
        return list(spec["choices"])
    if isinstance(spec, list):
        if len(spec) == 2 and all(_is_number(v) for v in spec):
            return None  # a range
        if not spec:
            raise ValueError("must not be an empty list")
        return list(spec)
    raise ValueError(f"must be [low, high], a list of choices, or {{choices: [...]}}, got {spec!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _extremes(name: str, spec: Any) -> list:
    try:
        choices = _choices(spec)
    except ValueError as error:
        raise ValueError(f"vary.{name} {error}") from None
    if choices is not None:
        return choices
    low, high = spec
    if low > high:
        raise ValueError(f"vary.{name}: the range [{low}, {high}] has low > high")
    if name in _BOOL_SETTINGS:
        raise ValueError(f"vary.{name} is true or false: give a list of choices such as {{choices: [true, false]}}")
    return [low, high]


def draw_candidates(base: EditSettings, vary: Mapping[str, Any], count: int, seed: int) -> list[Candidate]:
    """`count` candidates of a request whose seed is `seed`. Candidate k draws each varied setting from its own
    generator seeded by (seed, k): a `[low, high]` range uniformly (integers for integer settings, inclusive), a list
    (or `{choices: [...]}`) uniformly among its entries. `seed: true` gives candidate k > 0 a seed of its own
    (candidate 0 keeps the request's); other settings stay `base`'s."""
    candidates = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        drawn: dict[str, Any] = {}
        for name in sorted(vary):
            spec = vary[name]
            if name == "seed":
                continue
            choices = _choices(spec)
            if choices is not None:
                value = choices[int(rng.integers(len(choices)))]
            elif name in _INT_SETTINGS:
                value = int(rng.integers(int(spec[0]), int(spec[1]), endpoint=True))
            else:
                value = float(rng.uniform(float(spec[0]), float(spec[1])))
            drawn[name] = value
        candidate_seed = seed
        if vary.get("seed") and index > 0:
            candidate_seed = int(rng.integers(0, SEED_LIMIT, dtype=np.int64))
            drawn["seed"] = candidate_seed
        settings = base.replace(**{k: v for k, v in drawn.items() if k != "seed"})
        candidates.append(Candidate(index, settings, candidate_seed, drawn))
    return candidates


@dataclass(frozen=True)
class Verdict:
    """A candidate's fate: kept, or the reason it was not."""

    kept: bool
    reason: str | None = None


def select_candidates(scores: Sequence[Mapping[str, float | None]], *, keep: int, rank_by: str,
                      floors: Mapping[str, float], ceilings: Mapping[str, float] | None = None) -> list[Verdict]:
    """The verdict of each candidate of one request (in order), from its scores (score name -> value, None when it
    could not be computed). A candidate fails the first floor (`score >= floor`) or ceiling (`score <= ceiling`)
    it misses, or whose score is missing; of the rest, the `keep` best by `rank_by` (higher first; a missing score
    last; ties by index) are kept, the others are "ranked below keep"."""
    ceilings = ceilings or {}
    verdicts: list[Verdict | None] = []
    for score in scores:
        reason = None
        for name, floor in sorted(floors.items()):
            value = score.get(name)
            if value is None:
                reason = f"{name} could not be computed (floor {floor:g})"
            elif value < floor:
                reason = f"{name} {value:.4g} < min {floor:g}"
            if reason:
                break
        for name, ceiling in sorted(ceilings.items()):
            if reason:
                break
            value = score.get(name)
            if value is None:
                reason = f"{name} could not be computed (ceiling {ceiling:g})"
            elif value > ceiling:
                reason = f"{name} {value:.4g} > max {ceiling:g}"
        verdicts.append(Verdict(False, reason) if reason else None)
    passing = [i for i, verdict in enumerate(verdicts) if verdict is None]

    def rank(i: int) -> tuple:
        value = scores[i].get(rank_by)
        return (value is None, -(value if value is not None else 0.0), i)

    ordered = sorted(passing, key=rank)
    for position, i in enumerate(ordered):
        if position < keep:
            verdicts[i] = Verdict(True)
        else:
            verdicts[i] = Verdict(False, f"ranked below keep ({position + 1} of {len(ordered)} passing by {rank_by})")
    return [verdict for verdict in verdicts if verdict is not None]
