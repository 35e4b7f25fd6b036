"""Output formats: where an edit's files go, and how they are read back.

- ``files``: ``PREFIX/images/<key>.png`` and ``PREFIX/masks/<key>.png``, one object each (small jobs).
- ``webdataset``: tar shards ``PREFIX/shards/<name>.tar``; per edit ``<key>.png`` (or ``.jpg``), ``<key>.mask.png``,
  ``<key>.json`` (id, prompts, seed, mask coverage, metrics, source URI) and, optionally, the source picture as
  ``<key>.src.<ext>`` (its own bytes, or a PNG of its pixels upright when EXIF rotates it), so a shard holds
  complete training pairs. The ``webdataset`` package reads
  them.
- ``parquet``: Parquet shards ``PREFIX/shards/<name>.parquet``, a row per edit with the edit, the mask and the
  source as image structs (``{bytes, path}``) and the same metadata; Hugging Face ``datasets`` loads them with
  Image features.

A shard is written whole in one atomic write (temp name + rename locally, one upload on S3), before the records
that name it. A record names its outputs by URI: a file's URI, or ``<shard URI>#<member>`` for a member of a
shard (``.../shards/x.tar#<key>.mask.png``). Sample keys have no dots (webdataset splits a member's name at its
first dot), and no ``#``, so the last ``#`` of a URI that follows a ``.tar`` or ``.parquet`` shard name marks a
member.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import StorageError, StorageOptions, output_key, read_bytes, redact_uri

__all__ = [
    "META_FIELDS",
    "OUTPUT_FORMATS",
    "PARQUET_SHARD_SCHEMA",
    "OutputReader",
    "Sample",
    "hf_image_schema",
    "member_uri",
    "parquet_shard",
    "sample_key",
    "shard_name",
    "split_member",
    "webdataset_shard",
    "with_carried",
]

OUTPUT_FORMATS = ("files", "webdataset", "parquet")
SHARD_EXTENSIONS = {"webdataset": "tar", "parquet": "parquet"}
_MEMBER = re.compile(r"^(.*\.(?:tar|parquet))#([^/#]+)$", re.DOTALL)
# A fixed modification time: a shard's bytes depend on its samples only, so a retried write is the same shard.
_MTIME = 0


def sample_key(edit_id: str) -> str:
    """An edit's key inside a shard: its output key (safe characters and a hash of the id) without dots."""
    return output_key(edit_id).replace(".", "_")


def shard_name(run_id: str, keys: Sequence[str]) -> str:
    """A shard's name: the run and a digest of its sample keys, so a retried write task replaces its own shard."""
    digest = hashlib.blake2b("\n".join(keys).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{run_id}-{digest}"


def member_uri(shard_uri: str, member: str) -> str:
    return f"{shard_uri}#{member}"


def split_member(uri: str) -> tuple[str, str] | None:
    """``(shard URI, member)`` of a shard member's URI; None for a plain file's URI."""
    match = _MEMBER.match(uri)
    return (match.group(1), match.group(2)) if match else None


@dataclass
class Sample:
    """One edit's outputs, encoded: what a shard holds of it."""

    key: str
    edit: bytes
    edit_ext: str  # png or jpg
    mask: bytes  # png
    meta: dict  # the json member: id, prompts, seed, coverage, metrics, source URI
    source: bytes | None = None  # the input picture's own bytes
    source_ext: str | None = None
    carried: dict | None = None  # the input row's carried columns, as stored (input.carry_columns)

    def members(self) -> dict[str, bytes]:
        """Member name -> bytes, as they appear in a tar shard. Carried columns join the json member's fields (the
        edit's own fields win a clash of names); a carried integer ``label`` is also the ``.cls`` member, as
        img2dataset and webdataset's classification loaders read it."""
        meta = {**(self.carried or {}), **self.meta}
        members = {
            f"{self.key}.{self.edit_ext}": self.edit,
            f"{self.key}.mask.png": self.mask,
            f"{self.key}.json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode(),
        }
        label = (self.carried or {}).get("label")
        if isinstance(label, int) and not isinstance(label, bool):
            members[f"{self.key}.cls"] = str(label).encode()
        if self.source is not None:
            members[f"{self.key}.src.{self.source_ext}"] = self.source
        return members

    @property
    def size(self) -> int:
        return len(self.edit) + len(self.mask) + len(self.source or b"")


def webdataset_shard(samples: Sequence[Sample]) -> bytes:
    """A WebDataset tar of `samples` (each sample's members together, in order)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, data in sample.members().items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
                info.uname = info.gname = "diffedit"
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
_META_COLUMNS = [
    ("id", pa.string(), "string"),
    ("source_prompt", pa.string(), "string"),
    ("target_prompt", pa.string(), "string"),
    ("inversion_prompt", pa.string(), "string"),
    ("source_concept", pa.string(), "string"),
    ("target_concept", pa.string(), "string"),
    ("caption", pa.string(), "string"),
    ("seed", pa.int64(), "int64"),
    ("mask_coverage", pa.float64(), "float64"),
    ("background_psnr", pa.float64(), "float64"),
    ("background_ssim", pa.float64(), "float64"),
    ("clip_target_score", pa.float64(), "float64"),
    ("clip_source_score", pa.float64(), "float64"),
    ("source_image_uri", pa.string(), "string"),
    ("width", pa.int32(), "int32"),
    ("height", pa.int32(), "int32"),
    ("source_id", pa.string(), "string"),  # the input row's id
    ("synthetic", pa.bool_(), "bool"),  # an edit: always true here
]
META_FIELDS = tuple(name for name, _, _ in _META_COLUMNS)
"""What a sample's json member (and a Parquet shard's row) says of the edit."""


def hf_image_schema(columns: Sequence[tuple[str, pa.DataType, str | None]]) -> pa.Schema:
    """A Parquet schema with Hugging Face ``datasets`` feature metadata: columns whose feature is None are images
    (``{bytes, path}`` structs that ``datasets`` decodes as PIL images), the others plain values of that dtype."""
    features = {name: {"_type": "Image"} if dtype is None else {"dtype": dtype, "_type": "Value"}
                for name, _, dtype in columns}
    return pa.schema([pa.field(name, arrow_type) for name, arrow_type, _ in columns],
                     metadata={"huggingface": json.dumps({"info": {"features": features}})})


PARQUET_SHARD_SCHEMA = hf_image_schema([
    ("__key__", pa.string(), "string"),
    ("image", _IMAGE, None),
    ("mask", _IMAGE, None),
    ("source_image", _IMAGE, None),
    *_META_COLUMNS,
])


def with_carried(schema: pa.Schema, carried: pa.Schema | None, features: dict | None) -> pa.Schema:
    """`schema` (with ``datasets`` features) plus the carried columns `carried` with their `features` (a ClassLabel
    keeps its names); a carried column whose name the schema has already is left out."""
    if carried is None or not len(carried):
        return schema
    info = json.loads(schema.metadata[b"huggingface"])
    for field in carried:
        if field.name in schema.names:
            continue
        schema = schema.append(pa.field(field.name, field.type))
        info["info"]["features"][field.name] = (features or {}).get(field.name) or {"dtype": "string",
                                                                                    "_type": "Value"}
    return schema.with_metadata({b"huggingface": json.dumps(info).encode()})


def parquet_shard(samples: Sequence[Sample], carried: pa.Schema | None = None, features: dict | None = None) -> bytes:
    """A Parquet shard of `samples`: one row each, images as structs, small row groups (a reader of one row reads
    one group); the carried columns `carried` as columns of their own types (`features`: their ``datasets``
    features)."""
    schema = with_carried(PARQUET_SHARD_SCHEMA, carried, features)
    rows = []
    for sample in samples:
        row = {name: (sample.carried or {}).get(name) for name in (carried.names if carried is not None else ())}
        row.update({name: sample.meta.get(name) for name in META_FIELDS})
        row.update({
            "__key__": sample.key,
            "image": {"bytes": sample.edit, "path": f"{sample.key}.{sample.edit_ext}"},
            "mask": {"bytes": sample.mask, "path": f"{sample.key}.mask.png"},
            "source_image": None if sample.source is None else
            {"bytes": sample.source, "path": f"{sample.key}.src.{sample.source_ext}"},
        })
        rows.append(row)
    sink = pa.BufferOutputStream()
    # Images do not compress: only the metadata is worth it, and small row groups keep one row's read small.
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, row_group_size=32,
                   compression="zstd", use_dictionary=False)
    return sink.getvalue().to_pybytes()


def _tar_members(data: bytes) -> dict[str, bytes]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            if info.isfile():
                members[info.name] = tar.extractfile(info).read()
    return members


def _parquet_members(data: bytes) -> dict[str, bytes]:
    table = pq.read_table(pa.BufferReader(data))
    members = {}
    for row in table.to_pylist():
        key = row["__key__"]
        for column in ("image", "mask", "source_image"):
            if row[column] is not None:
                members[row[column]["path"] or f"{key}.{column}"] = row[column]["bytes"]
    return members


class OutputReader:
    """Reads outputs by their record URIs: files directly, shard members from their shard, which is fetched once
    and kept (the `cache_shards` most recent) while the records of one shard are read. Thread-safe."""

    def __init__(self, options: StorageOptions | None = None, cache_shards: int = 2):
        self.options = options
        self.cache_shards = cache_shards
        self._shards: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, uri: str) -> bytes:
        """The bytes of the output at `uri`. Raises StorageError when it cannot be read."""
        member = split_member(uri)
        if member is None:
            return read_bytes(uri, self.options)
        shard_uri, name = member
        members = self._shard(shard_uri)
        if name not in members:
            raise StorageError(f"{redact_uri(shard_uri)} has no member {name!r}")
        return members[name]

    def _shard(self, uri: str) -> dict[str, bytes]:
        with self._lock:
            if uri in self._shards:
                self._shards.move_to_end(uri)
                return self._shards[uri]
            data = read_bytes(uri, self.options)
            try:
                members = _tar_members(data) if uri.endswith(".tar") else _parquet_members(data)
            except (tarfile.TarError, OSError, pa.ArrowException) as exc:
                raise StorageError(f"cannot read shard {redact_uri(uri)}: {exc}") from exc
            self._shards[uri] = members
            while len(self._shards) > self.cache_shards:
                self._shards.popitem(last=False)
            return members
