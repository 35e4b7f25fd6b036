"""Building a `Config`: from a YAML file, a mapping and `section.key=value` overrides, validated at the door.

Unknown sections and keys, wrong types and bad values all raise `ConfigError`, whose message starts with the key
path (`job.batch_size ...`) and suggests the closest known key for a typo.

    config = load_config("configs/tiny.yaml", ["job.batch_size=2", "edit.num_inference_steps=20"])
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .fields import ConfigError, accepts_str, convert, type_hints
from .schema import SECTIONS, Config


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
    hints = type_hints(cls)
    try:
        # Convert before building, so classes that only check types (EditSettings) still get e.g. floats.
        kwargs = {name: convert(f"{cls.__name__}.{name}", hints[name], value) for name, value in values.items()}
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
        if accepts_str(type_hints(SECTIONS[section])[name]) and value is not None and not isinstance(value, str):
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
