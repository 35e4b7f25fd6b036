"""Prompt templates: prompts made from a manifest row's own columns (`prompts.source`, `prompts.targets`).

A template is Python format text whose placeholders name columns: `"a photo of a {label} in the snow"`. A value
is the column's as stored, except a Hugging Face `ClassLabel` column (its names given in `class_names`), which
gives its class name. `{caption}` is the BLIP caption of the picture unless the manifest has a column named
`caption`: it is only known in the edit pass, so rendering leaves it in the text (`CAPTION`) and the captions stage
fills it in (`fill_caption`). Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CAPTION", "TemplateProblem", "check_template", "class_name", "fill_caption", "has_caption",
           "placeholders", "render", "unknown_placeholders"]

CAPTION = "{caption}"
_CAPTION_NAME = "caption"


class TemplateProblem(ValueError):
    """A row whose values cannot fill a template (a null value, a class index out of range): its invalid_row."""


def placeholders(template: str) -> list[str]:
    """The column names a template's placeholders name, in order, each once."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in names:
            names.append(name)
    return names


def check_template(template: str) -> None:
    """Raise ValueError when `template` is not one: unbalanced braces, a placeholder with no name, an index or
    attribute (`{0}`, `{a.b}`, `{a[0]}`), a conversion or a format spec."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"is not a template ({error}; write a literal brace as {{{{ or }}}}): {template!r}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ValueError(f"has a placeholder {{{name}}} that is not a column name: {template!r}")
        if spec or conversion:
            raise ValueError(f"has a placeholder {{{name}}} with a format or conversion, which templates do not "
                             f"take: {template!r}")


def unknown_placeholders(templates: Iterable[str], columns: Iterable[str]) -> list[str]:
    """The placeholders of `templates` that name no column (`caption` is the BLIP caption when no column has
    that name), each once, in order."""
    known = set(columns)
    unknown = []
    for template in templates:
        for name in placeholders(template):
            if name not in known and name != _CAPTION_NAME and name not in unknown:
                unknown.append(name)
    return unknown


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def class_name(column: str, value: Any, class_names: Mapping[str, list[str]]) -> str:
    """A label value as text: its class name for a ClassLabel column (`class_names[column]`), else the value.
    Raises TemplateProblem for a null value or a class index out of range."""
    if _null(value):
        raise TemplateProblem(f"column {column!r} is null")
    names = class_names.get(column)
    if names is None:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise TemplateProblem(f"column {column!r} holds {value!r}, which is not a class index of its ClassLabel "
                              f"(0 to {len(names) - 1})")
    return names[value]


def render(template: str, row: Mapping[str, Any], class_names: Mapping[str, list[str]]) -> str:
    """`template` filled from `row`; `{caption}` stays for the captions stage unless `row` has a caption column.
    Raises TemplateProblem naming the column whose value is null (or out of its ClassLabel's range)."""
    values = {}
    for name in placeholders(template):
        if name == _CAPTION_NAME and name not in row:
            values[name] = CAPTION
        else:
            values[name] = class_name(name, row.get(name), class_names)
    return template.format_map(values)


def has_caption(text: Any) -> bool:
    """Whether a rendered prompt still waits for the picture's caption."""
    return isinstance(text, str) and CAPTION in text


def fill_caption(text: Any, caption: str) -> Any:
    """`text` with the caption in place of `{caption}` (other values as they are)."""
    return text.replace(CAPTION, caption) if has_caption(text) else text
