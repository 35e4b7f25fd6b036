"""Class names and feature types of an input's label columns, resolved once per run.

A labelled input names its classes in one of three places, in this order:

1. the Hugging Face ``datasets`` features in the Parquet schema metadata (key ``huggingface``): every ``ClassLabel``
   column with its names;
2. ``input.label_names`` in the config: the names of the ``label`` column (a WebDataset's ``.cls`` numbers, or a
   Parquet ``label`` column without metadata);
3. an ImageFolder's class folders, sorted (as torchvision's ``ImageFolder`` numbers them).

`class_names_of` is the one function that decides; the driver calls it once and hands the mapping to the stages that
need it (prompts that name a class, the label filter, the exports). The module also turns Arrow types into the
feature JSON that ``datasets`` reads back, so an export keeps a ``ClassLabel`` a ``ClassLabel``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

__all__ = [
    "LABEL_COLUMN",
    "class_names_of",
    "feature_of",
    "features_of",
    "hf_features",
    "label_problem",
]

LABEL_COLUMN = "label"
"""The column a WebDataset's ``.cls`` and an ImageFolder's class folder fill, and ``input.label_names`` names."""


def hf_features(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The ``datasets`` features (column -> feature JSON) of a Parquet schema's metadata; None when it has none or
    they cannot be read (another tool's key of the same name)."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return None
    return features if isinstance(features, dict) else None


def class_names_of(
    *,
    features: Mapping[str, Any] | None = None,
    label_names: Sequence[str] | None = None,
    folders: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Column -> class names of every label column of an input.

    `features`: the input's ``datasets`` features (`hf_features`): each top-level ``ClassLabel`` column with its names.
    `label_names`: ``input.label_names``, the names of the ``label`` column when the metadata does not name them.
    `folders`: an ImageFolder's class folder names; sorted, they name the ``label`` column when nothing above does.
    """
    names: dict[str, list[str]] = {}
    for column, feature in (features or {}).items():
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
            names[column] = [str(name) for name in feature["names"]]
    if LABEL_COLUMN not in names:
        if label_names:
            names[LABEL_COLUMN] = [str(name) for name in label_names]
        elif folders:
            names[LABEL_COLUMN] = sorted(str(name) for name in folders)
    return names


def label_problem(column: str, value: Any, names: Sequence[str]) -> str | None:
    """Why `value` is not a class index of `column` (its `names`), or None. Null and -1 (``datasets``' "no label")
    are allowed: an unlabelled row."""
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{column} {value!r} is not a class index"
    if not 0 <= value < len(names):
        return f"{column} {value} is out of range: its class names are 0..{len(names) - 1} ({_few(names)})"
    return None


def _few(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (", ..." if len(names) > most else "")


_VALUE_TYPES = {
    pa.bool_(): "bool", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64",
    pa.uint8(): "uint8", pa.uint16(): "uint16", pa.uint32(): "uint32", pa.uint64(): "uint64",
    pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64", pa.string(): "string",
    pa.large_string(): "large_string", pa.binary(): "binary", pa.large_binary(): "large_binary", pa.null(): "null",
}


def feature_of(arrow_type: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature JSON of a column of `arrow_type` (Value, List, or a dict of features for a struct)."""
    if arrow_type in _VALUE_TYPES:
        return {"dtype": _VALUE_TYPES[arrow_type], "_type": "Value"}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"feature": feature_of(arrow_type.value_type), "_type": "List"}
    if pa.types.is_struct(arrow_type):
        return {field.name: feature_of(field.type) for field in arrow_type}
    if pa.types.is_dictionary(arrow_type):
        return feature_of(arrow_type.value_type)
    return {"dtype": str(arrow_type), "_type": "Value"}


def features_of(schema: pa.Schema, features: Mapping[str, Any] | None,
                class_names: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The feature JSON of every column of `schema`: the input's own ``datasets`` feature where it has one, a
    ``ClassLabel`` with its names for a label column named elsewhere (`class_names`), else the Arrow type's."""
    out = {}
    for field in schema:
        if features and field.name in features:
            out[field.name] = features[field.name]
        elif field.name in class_names and pa.types.is_integer(field.type):
            out[field.name] = {"names": list(class_names[field.name]), "_type": "ClassLabel"}
        else:
            out[field.name] = feature_of(field.type)
    return out
