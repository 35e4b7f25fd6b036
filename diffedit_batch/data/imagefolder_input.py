"""ImageFolder inputs: ``<root>/<class>/<file>``, the class as ``label``, ``metadata.jsonl`` merged where present.

As torchvision's ``ImageFolder``: the class folders sorted by name are the classes 0..n-1 (unless
``input.label_names`` or the metadata name them), a picture is any file with a picture's extension inside a class
folder (at any depth). As Hugging Face's ``imagefolder`` loader: a ``metadata.jsonl`` at the root adds columns to
the picture its ``file_name`` (relative to the root) names. A row's id is its path under the root
(``cat/0001.jpg``); its picture is read by URI, as a manifest's is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from .storage import StorageError, StorageOptions, join, list_files, read_bytes, redact_uri, resolve

__all__ = ["FOLDER_IMAGE_EXTENSIONS", "METADATA_FILE", "class_folders", "folder_rows", "read_metadata"]

FOLDER_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
METADATA_FILE = "metadata.jsonl"


def relative(uri: str, root: str, options: StorageOptions) -> str:
    _, base = resolve(root, options)
    return resolve(uri, options)[1][len(base.rstrip("/")):].strip("/")


def is_picture(name: str) -> bool:
    return name.lower().endswith(FOLDER_IMAGE_EXTENSIONS)


def class_folders(root: str, files: Sequence[str], options: StorageOptions) -> dict[str, list[str]]:
    """Class folder name -> the URIs of its pictures (sorted), from the listing `files` of `root`. Files straight
    under the root, and hidden ones, are no class's."""
    classes: dict[str, list[str]] = {}
    for uri in files:
        path = relative(uri, root, options)
        parts = path.split("/")
        if len(parts) < 2 or any(part.startswith((".", "_")) for part in parts) or not is_picture(parts[-1]):
            continue
        classes.setdefault(parts[0], []).append(uri)
    return {name: sorted(classes[name]) for name in sorted(classes)}


def read_metadata(root: str, options: StorageOptions) -> dict[str, dict[str, Any]]:
    """`metadata.jsonl` at the root: file name (relative to the root) -> its other columns; empty without one."""
    uri = join(root, METADATA_FILE)
    try:
        text = read_bytes(uri, options).decode("utf-8")
    except StorageError:
        return {}
    rows = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise StorageError(f"{redact_uri(uri)} line {number} is not JSON: {error}") from None
        if isinstance(row, dict) and isinstance(row.get("file_name"), str):
            rows[row.pop("file_name").strip("/")] = row
    return rows


def folder_rows(root: str, folder: str, class_index: int | None, metadata: dict[str, dict[str, Any]],
                options: StorageOptions) -> Iterator[dict[str, Any]]:
    """The rows of one class folder: ``id`` (the path under the root), ``image`` (its URI), ``label`` (the class
    index; None when the class has no name in ``input.label_names``, then ``input_error`` says so), and the
    picture's metadata columns."""
    for uri in sorted(list_files(join(root, folder), None, options)):
        path = relative(uri, root, options)
        parts = path.split("/")
        if any(part.startswith((".", "_")) for part in parts) or not is_picture(parts[-1]):
            continue
        row = dict(metadata.get(path, {}))
        row.update(id=path, image=uri, label=class_index, input_error=None)
        if class_index is None:
            row["input_error"] = f"class folder {folder!r} is not one of input.label_names"
        yield row
