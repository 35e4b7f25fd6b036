"""Field types and value checks shared by the config sections.

Section fields use a small set of types: bool, int, float, str, tuple[str, ...], dict[str, Any] and `X | None` of
those.
`check_field_types` checks a section instance against its annotations, converting where the YAML value is a
faithful spelling of the declared type (an int for a float, a list for a tuple). The value checks raise
ValueError messages that start with `ClassName.field`; the loader rewrites that to the key path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

from diffedit_batch.engine.devices import DTYPE_NAMES, check_device_name
from diffedit_batch.seeds import SEED_LIMIT


class ConfigError(ValueError):
    """A config that cannot be used. `key` is the offending key path (`edit.num_inference_steps`), when one is."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def is_optional(hint: Any) -> tuple[bool, Any]:
    """(True, X) for `X | None`, else (False, hint)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def convert(name: str, hint: Any, value: Any) -> Any:
    """`value` as type `hint`; raises ValueError naming `name` when it is not one."""
    optional, hint = is_optional(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must not be null")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {quoted(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            # Ray, pyarrow and the OS take ints as int64: a larger one would fail deep inside a run, not here.
            if not -INT64_LIMIT <= value < INT64_LIMIT:
                raise ValueError(f"{name} must be an integer in [-2**63, 2**63), got {quoted(value)}")
            return value
        raise ValueError(f"{name} must be an integer, got {quoted(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # .inf and .nan are YAML floats: an infinite guidance scale made black edits recorded ok, an infinite
            # timeout crashed the threads that wait on it. No setting means anything at infinity.
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return float(value)
        raise ValueError(f"{name} must be a number, got {quoted(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {quoted(value)}")
    if typing.get_origin(hint) is dict or hint is dict:
        # A mapping of names (e.g. a setting or a score) to values the section checks itself.
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return dict(value)
        raise ValueError(f"{name} must be a mapping of names to values, got {quoted(value)}")
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        if value == "*" and item_hint is str:
            return ("*",)  # a list of names that means "all of them" may be written as the string "*"
        if isinstance(value, (list, tuple)):
            return tuple(convert(f"{name}[{i}]", item_hint, item) for i, item in enumerate(value))
        raise ValueError(f"{name} must be a list, got {quoted(value)}")
    raise TypeError(f"{name}: unsupported config field type {hint!r}")


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


INT64_LIMIT = 2**63

MAX_SECONDS = 86_400.0
"""The longest duration a setting may give (a day): longer waits are mistakes, and past about 9.2e9 s Python's
thread waits overflow."""


def quoted(value: Any, most: int = 80) -> str:
    """`repr(value)`, cut to `most` characters: a value can be a huge YAML structure, and a message is one line."""
    text = repr(value)
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def check_field_types(instance: Any) -> None:
    """Check every field of a frozen section dataclass against its annotation, storing converted values.

    Messages name the field as `ClassName.field`; the config builder rewrites that to the key path.
    """
    hints = type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        converted = convert(f"{type(instance).__name__}.{f.name}", hints[f.name], value)
        if converted is not value:
            object.__setattr__(instance, f.name, converted)


def accepts_str(hint: Any) -> bool:
    return is_optional(hint)[1] is str


def positive_int(instance: Any, name: str) -> None:
    value = getattr(instance, name)
    if value <= 0:
        raise ValueError(f"{type(instance).__name__}.{name} must be a positive integer, got {value!r}")


def at_least(instance: Any, name: str, low: float, *, open_: bool = False) -> None:
    value = getattr(instance, name)
    if value != value or (value <= low if open_ else value < low):
        raise ValueError(f"{type(instance).__name__}.{name} must be {'>' if open_ else '>='} {low}, got {value!r}")


def seconds(instance: Any, name: str, *, zero: bool = False) -> None:
    """A duration in seconds: > 0 (>= 0 with `zero`) and at most MAX_SECONDS."""
    value = getattr(instance, name)
    low_ok = value >= 0 if zero else value > 0
    if value != value or not low_ok or value > MAX_SECONDS:
        raise ValueError(f"{type(instance).__name__}.{name} must be in {'[' if zero else '('}0, {MAX_SECONDS:g}] "
                         f"seconds, got {value!r}")


def one_of(instance: Any, name: str, choices: Sequence[str]) -> None:
    value = getattr(instance, name)
    if value not in choices:
        raise ValueError(f"{type(instance).__name__}.{name} must be one of {', '.join(choices)}, got {value!r}")


def non_empty(instance: Any, name: str) -> None:
    value = getattr(instance, name)
    if value is not None and not value.strip():
        raise ValueError(f"{type(instance).__name__}.{name} must not be empty")


def device(instance: Any, name: str) -> None:
    """A device name: auto, cpu, cuda or cuda:N (see diffedit_batch.engine.devices)."""
    try:
        check_device_name(getattr(instance, name))
    except ValueError as error:
        raise ValueError(f"{type(instance).__name__}.{name} {str(error).removeprefix('device ')}") from None


def dtype(instance: Any, name: str) -> None:
    """A precision name: one of diffedit_batch.engine.devices.DTYPE_NAMES."""
    one_of(instance, name, DTYPE_NAMES)


def seed(instance: Any, name: str) -> None:
    """An integer in [0, 2**63): what a result record can store (diffedit_batch.seeds)."""
    value = getattr(instance, name)
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{type(instance).__name__}.{name} must be an integer in [0, 2**63), got {value!r}")
