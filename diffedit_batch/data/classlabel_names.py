"""The class names of a Parquet manifest's `ClassLabel` columns, from the `huggingface` schema metadata that
`datasets` writes (`{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}`).

A minimal resolution for prompt templates and augment (`{label}` gives the class name); the input readers'
`data/labels.py` (HF metadata, `input.label_names`, ImageFolder folders) supersedes it once merged.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from .storage import StorageOptions, resolve

__all__ = ["class_names_from_metadata", "manifest_class_names"]


def class_names_from_metadata(metadata: dict | None) -> dict[str, list[str]]:
    """Column -> class names of each top-level ClassLabel feature in a schema's metadata (bytes keys and values,
    as pyarrow gives them); {} when there is none or it cannot be read."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        info = json.loads(raw)
        features = info.get("info", {}).get("features") or info.get("features") or {}
    except (ValueError, AttributeError):
        return {}
    names = {}
    for column, feature in features.items() if isinstance(features, dict) else ():
        if (isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
                and isinstance(feature.get("names"), list)):
            names[column] = [str(name) for name in feature["names"]]
    return names


def manifest_class_names(file_uris: list[str], options: StorageOptions | None = None) -> dict[str, list[str]]:
    """The ClassLabel names of a manifest, read from its first file's footer (`datasets` writes the same metadata in
    every file of a split)."""
    if not file_uris:
        return {}
    filesystem, path = resolve(file_uris[0], options)
    with filesystem.open_input_file(path) as handle:
        return class_names_from_metadata(pq.ParquetFile(handle).schema_arrow.metadata)
