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

from .fields import ConfigError, accepts_str, convert, quoted, type_hints
from .schema import SECTIONS, Config

MAX_YAML_VALUES = 10_000
"""Most values a config (or one --set value) may hold once YAML aliases are expanded. A config has about a
hundred; an alias bomb (each level repeating the one below) has billions, which printing or copying it expands."""
MAX_YAML_DEPTH = 100
"""Deepest nesting a config may have: PyYAML builds documents recursively, and a deeper one overflows the stack."""


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing (yaml.YAMLError) a document whose aliases expand past MAX_YAML_VALUES
    values or that nests deeper than MAX_YAML_DEPTH, before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        loader.compose_node = _depth_bounded(loader.compose_node)
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise yaml.YAMLError(f"it holds more than {MAX_YAML_VALUES:,} values once its aliases are expanded "
                                 "(a YAML alias bomb?); write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _depth_bounded(compose_node):
    depth = 0

    def bounded(parent, index):
        nonlocal depth
        depth += 1
        try:
            if depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"it nests deeper than {MAX_YAML_DEPTH} levels")
            return compose_node(parent, index)
        finally:
            depth -= 1

    return bounded


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values in `node` with every alias expanded, counted once per distinct node (an alias is the same node
    object, so the count costs the document's size, not its expansion's)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_YAML_VALUES + 1)
    return sizes[id(node)]


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
        raise ConfigError(f"config section '{section}' must be a mapping, got {quoted(values)}", key=section)
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
        raise ConfigError(f"a config must be a mapping of sections, got {quoted(data)}")
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
            value = parse_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {quoted(override)}: the value is not valid YAML: {_one_line(error)}",
                              key=key) from None
        if accepts_str(type_hints(SECTIONS[section])[name]) and value is not None and not isinstance(value, str):
            value = text.strip()
        current = result.get(section) or {}
        if not isinstance(current, Mapping):
            raise ConfigError(f"config section '{section}' must be a mapping, got {quoted(current)}", key=section)
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
            data = parse_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {_one_line(error)}") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {quoted(data)}")
    return config_from_dict(apply_overrides(data, overrides))


def _one_line(error: Exception) -> str:
    """A YAML error on one line, cut short: its text quotes the document around the problem."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:300] + "..."
