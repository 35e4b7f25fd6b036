"""Augmenting a labelled dataset: each manifest row's prompts from templates, how many of its targets it edits, its
class, and its region, decided per row in the plan (`worklist.requests_to_plan_rows`). Pure Python: no Ray.

- Templates (`prompts.source`, `prompts.targets`) fill a row's prompts from its columns (`data.templates`); a row's
  own source_prompt, target_prompt or target_prompts win. Edit ids keep the target's index: `<id>#<k>`.
- `augment.per_image: K`: K of a row's targets, drawn from the row's seed (`draw_targets`: a permutation of the
  targets, its first K; a larger K keeps the smaller K's draws, so ids stay stable).
- `augment.balance_by` with `per_class: M`: a class of n rows gets M edits, or all its rows' targets when fewer;
  the row of rank j in its class (manifest order) makes floor(M (j + 1) / n) - floor(M j / n) of them
  (`class_quota`), so they spread evenly and every class gets its M whatever its size. The class counts and each
  row's rank come from a group-by over the whole manifest before the plan (`pipeline.planning.count_classes`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .regions import RegionProblem, boxes_from_column, parse_boxes
from .templates import TemplateProblem, class_name, render

__all__ = ["Recipe", "class_key", "class_quota", "draw_targets"]

_DRAW_STREAM = 0x6175676D  # keeps the target draw apart from every other use of a row's seed


def class_key(value: Any) -> str | None:
    """A class value as the key of its count (JSON text: `3`, `"cat"`); None for null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    return json.dumps(value, sort_keys=True, default=str)


def class_quota(rank: int, rows: int, per_class: int) -> int:
    """Edits of the row of `rank` (0-based, manifest order) among the `rows` rows of its class when the class gets
    `per_class` edits: they sum to `per_class` over the class, and differ by at most one between its rows."""
    if rows <= 0:
        return 0
    return (per_class * (rank + 1)) // rows - (per_class * rank) // rows


def draw_targets(seed: int, count: int, k: int) -> list[int]:
    """`k` of `count` target positions (sorted), drawn from a row's seed: the first k of a seeded permutation, so the
    draw of k is part of the draw of k + 1."""
    if k >= count:
        return list(range(count))
    order = np.random.default_rng([_DRAW_STREAM, seed]).permutation(count)
    return sorted(int(i) for i in order[:k])


@dataclass(frozen=True)
class Recipe:
    """What the plan needs of the `prompts`, `augment` and `region` config sections, and of the manifest (its
    ClassLabel names, the class counts of `balance_by`)."""

    source_template: str | None = None
    target_templates: tuple[str, ...] = ()
    per_image: int | None = None
    balance_by: str | None = None
    per_class: int | None = None
    label_column: str | None = None  # whose class each edit records (balance_by, else the label template's column)
    boxes_from: str | None = None  # "column.field"
    class_names: Mapping[str, list[str]] = field(default_factory=dict)
    class_counts: Mapping[str, int] = field(default_factory=dict)  # class_key -> rows

    @property
    def columns(self) -> list[str]:
        """The manifest columns the recipe reads, besides the manifest's own."""
        from .templates import placeholders

        names = [name for template in (self.source_template, *self.target_templates) if template
                 for name in placeholders(template)]
        names += [self.balance_by, self.label_column, self.boxes_from.split(".")[0] if self.boxes_from else None]
        return list(dict.fromkeys(name for name in names if name))

    def fill(self, row: dict) -> dict:
        """`row` with its prompts filled from the templates where it has none of its own (a concept counts as its
        own). Raises TemplateProblem naming a column whose value is null."""
        if not self.source_template and not self.target_templates:
            return row
        row = dict(row)
        if self.source_template and _blank(row.get("source_prompt")) and _blank(row.get("source_concept")):
            row["source_prompt"] = render(self.source_template, row, self.class_names)
        has_targets = (not _blank(row.get("target_prompt")) or _listed(row.get("target_prompts"))
                       or not _blank(row.get("target_concept")))
        if self.target_templates and not has_targets:
            row["target_prompts"] = [render(t, row, self.class_names) for t in self.target_templates]
        return row

    def class_of(self, row: Mapping[str, Any]) -> str | None:
        """The row's class as text (a ClassLabel's name), for its records; raises TemplateProblem when null."""
        if self.label_column is None:
            return None
        return class_name(self.label_column, row.get(self.label_column), self.class_names)

    def edits_wanted(self, row: Mapping[str, Any], class_rank: int | None) -> int | None:
        """How many of its targets the row edits (None: all). Raises TemplateProblem when its balance_by value is
        null."""
        wanted = self.per_image
        if self.balance_by is not None:
            key = class_key(row.get(self.balance_by))
            if key is None:
                raise TemplateProblem(f"augment.balance_by column {self.balance_by!r} is null")
            quota = class_quota(class_rank or 0, self.class_counts.get(key, 1), self.per_class or 0)
            wanted = quota if wanted is None else min(wanted, quota)
        return wanted

    def boxes(self, row: Mapping[str, Any]) -> list[list[float]] | None:
        """The row's region boxes: None when its column is null (no region), [] when it lists none (an empty region:
        with `region.mode: inside` nothing to edit); raises RegionProblem for a bad box."""
        if self.boxes_from:
            column, name = self.boxes_from.split(".")
            value = row.get(column)
            return None if value is None else boxes_from_column(value, name, self.boxes_from)
        value = row.get("region_boxes")
        return None if value is None else parse_boxes(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _listed(value: Any) -> bool:
    return value is not None and not isinstance(value, (str, float)) and len(list(value)) > 0


__all__ += ["RegionProblem", "TemplateProblem"]
