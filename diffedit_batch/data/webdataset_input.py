"""WebDataset inputs: tar shards whose members ``<key>.<ext>`` group into samples (img2dataset's layout).

A sample is the members of one key, which must sit next to each other in the shard (the format's own rule: a
reader streams a shard once). Its row: ``__key__`` as the id, the picture from the first of jpg, jpeg, png and
webp (by a locator ``<shard URI>#<member>``, read again by the edit pass), the fields of ``.json`` as columns,
``.txt`` as ``text`` and ``.cls`` as ``label``. A sample without a picture is an error record; a shard whose
members of one key are not together, or a file that is not a tar, stops the run naming it.

Shards are streamed (``tarfile`` in stream mode over the storage's input stream): memory is one member at a time
when the plan reads them (pictures are read past, not kept) and one picture at a time in the edit pass.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .storage import StorageError, StorageOptions, redact_uri, resolve

__all__ = [
    "IMAGE_EXTENSIONS",
    "ShardError",
    "read_shard_images",
    "read_shard_member",
    "shard_samples",
    "split_key",
]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
"""The picture of a sample: the first of these it has."""


class ShardError(ValueError):
    """A shard that cannot be read as WebDataset: not a tar, or a key whose members are not together."""


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, as webdataset splits it: the key is the path up to the first dot of the
    file name, the extension the rest (lower case)."""
    folder, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    return (posixpath.join(folder, stem) if folder else stem), extension.lower()


def _open_stream(uri: str, options: StorageOptions):
    filesystem, path = resolve(uri, options)
    try:
        return filesystem.open_input_stream(path)
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot open shard {redact_uri(uri)}: {error}") from error


def _members(uri: str, options: StorageOptions, read: callable) -> Iterator[tuple[str, str, str, bytes | None]]:
    """(key, extension, member name, bytes or None) of each file member of the shard, streamed; `read(key, ext)`
    says whether a member's bytes are wanted. Raises ShardError when the shard is not a tar."""
    with _open_stream(uri, options) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, extension = split_key(info.name)
                    data = tar.extractfile(info).read() if read(key, extension) else None
                    yield key, extension, info.name, data
        except tarfile.TarError as error:
            raise ShardError(f"WebDataset shard {redact_uri(uri)} is not a tar file ({error})") from None


_META = ("json", "txt", "cls")


def shard_samples(uri: str, options: StorageOptions) -> Iterator[dict[str, Any]]:
    """The rows of the samples of one shard, in order, without their pictures: ``id`` (the key), ``image`` (the
    locator of its picture, or None), ``input_error`` (a sample without a picture), the fields of its ``.json``,
    ``text`` and ``label``. Raises ShardError (not a tar; a key whose members are not together)."""
    seen: set[str] = set()
    current: str | None = None
    sample: dict[str, Any] = {}

    def finished() -> dict[str, Any]:
        row = dict(sample.get("json") or {})
        if "txt" in sample:
            row["text"] = sample["txt"]
        if "cls" in sample:
            row["label"] = sample["cls"]
        row["id"] = current
        image = next((sample["images"][ext] for ext in IMAGE_EXTENSIONS if ext in sample.get("images", {})), None)
        row["image"] = None if image is None else f"{uri}#{image}"
        row["input_error"] = None if image is not None else (
            f"WebDataset sample {current!r} has no picture (none of {', '.join(IMAGE_EXTENSIONS)})")
        return row

    for key, extension, name, data in _members(uri, options, lambda key, ext: ext in _META):
        if key != current:
            if current is not None:
                yield finished()
            if key in seen:
                raise ShardError(f"WebDataset shard {redact_uri(uri)}: the members of key {key!r} are not together "
                                 "(another sample's members sit between them); write each sample's files next to "
                                 "each other")
            seen.add(key)
            current, sample = key, {}
        if extension in IMAGE_EXTENSIONS:
            sample.setdefault("images", {}).setdefault(extension, name)
        elif extension == "json":
            sample["json"] = _json_fields(data, uri, name)
        elif extension == "txt":
            sample["txt"] = data.decode("utf-8", "replace")
        elif extension == "cls":
            sample["cls"] = _class_index(data)
    if current is not None:
        yield finished()


def _json_fields(data: bytes, uri: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {"input_error": f"member {name} of {redact_uri(uri)} is not JSON"}
    return value if isinstance(value, dict) else {}


def _class_index(data: bytes) -> Any:
    text = data.decode("utf-8", "replace").strip()
    try:
        return int(text)
    except ValueError:
        return text  # not a number: the label check says so


def read_shard_images(uri: str, wanted: set[str], options: StorageOptions) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each member of `wanted` in the shard, streamed: one picture in memory at a time."""
    for _, _, name, data in _members(uri, options, lambda key, ext: ext in IMAGE_EXTENSIONS):
        if name in wanted:
            yield name, data


_indexes: OrderedDict[str, tarfile.TarFile] = OrderedDict()
_indexes_lock = threading.Lock()


def read_shard_member(uri: str, member: str, options: StorageOptions) -> bytes:
    """One member of a shard (export, shard writers): the shard's index of headers is kept for the next call (two
    shards per process). Raises StorageError."""
    with _indexes_lock:
        tar = _indexes.get(uri)
        if tar is None:
            filesystem, path = resolve(uri, options)
            try:
                tar = tarfile.open(fileobj=filesystem.open_input_file(path), mode="r:")
            except (OSError, tarfile.TarError) as error:
                raise StorageError(f"cannot read shard {redact_uri(uri)}: {error}") from error
            _indexes[uri] = tar
            while len(_indexes) > 2:
                _indexes.popitem(last=False)[1].close()
        _indexes.move_to_end(uri)
        try:
            handle = tar.extractfile(member)
        except KeyError:
            handle = None
        if handle is None:
            raise StorageError(f"shard {redact_uri(uri)} has no member {member}")
        return handle.read()
