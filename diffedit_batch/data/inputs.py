"""The job's input, whatever its format: a Parquet manifest, WebDataset shards or an ImageFolder tree.

One reader per format turns its rows into the job's one input row (`INPUT_ROW_SCHEMA`: the manifest's columns, the
row's place, its carried columns and what is wrong with it), so nothing after the plan's read stage knows which
format a row came from. `inspect_input` is called once, before any work: it tells the format (from the path, or
``input.format``), reads the footers or the first samples, resolves which columns are carried and the class names
of the label columns (`labels.class_names_of`), and raises ManifestError for an input that cannot be used at all.

Pictures embedded in the input (Parquet bytes or ``{bytes, path}`` structs, WebDataset members) are never read by
the plan: a row names its picture by a locator (``<file>#row=<k>``, ``<shard>#<member>``), and the edit pass reads
the pictures of its pending rows again, file by file, by row group or shard (`read_source_image` reads one, for the
shard writers and the exports).

The readers are this module's, run by the plan as Ray Data tasks (a file per task, streamed a block at a time), not
Ray Data's `read_parquet` / `read_webdataset`: a row's id and its place in the input (`<file>:<row>`, the row index
the plan orders duplicates by and the edit pass joins pictures back on) need each file's rows numbered in order, a
shard's samples must be checked for keys split apart, and the pictures must be left unread; those readers give
none of these.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .imagefolder_input import class_folders, folder_rows, is_picture, read_metadata, relative
from .labels import LABEL_COLUMN, class_names_of, features_of, hf_features, label_problem
from .manifest import (
    JOB_COLUMNS,
    MANIFEST_COLUMNS,
    Manifest,
    ManifestError,
    ManifestFile,
    image_struct_kind,
    inspect_manifest,
    manifest_base_dir,
    manifest_file_error,
    resolve_images,
)
from .parquet_input import image_values, read_embedded_image, split_locator
from .storage import StorageError, StorageOptions, file_type, list_file_infos, read_bytes, redact_uri, resolve
from .webdataset_input import ShardError, read_shard_member, shard_samples, split_key

__all__ = [
    "INPUT_FORMATS",
    "INPUT_ROW_SCHEMA",
    "InputSpec",
    "carried_of",
    "carried_schema_of",
    "inspect_input",
    "read_input_rows",
    "read_source_image",
]

log = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "parquet", "webdataset", "imagefolder")

_TYPES = {"string": pa.string(), "integer": pa.int64(), "string list": pa.list_(pa.string()), "image": pa.string()}
# The manifest columns an input row holds typed; the region columns (a picture as URI, bytes or struct; a list of
# boxes) travel as the columns below, as the recipe reads them.
_TYPED_COLUMNS = tuple(column for column in MANIFEST_COLUMNS if column.kind in _TYPES)
INPUT_ROW_SCHEMA = pa.schema([
    *(pa.field(column.name, _TYPES[column.kind]) for column in _TYPED_COLUMNS),
    pa.field("row_index", pa.int64()),  # the row's place: files in sorted order, then rows (a shard's: file << 32)
    pa.field("carried", pa.string()),  # JSON {column: value as stored} of the carried columns; null: none
    pa.field("input_error", pa.string()),  # why the row cannot be edited, found by its reader
    # what the recipe (prompt templates, augment, regions: data.augment) reads besides the typed columns: JSON
    # {column: value} of the columns it names (region_boxes among them), the region mask as a URI or as bytes, and
    # the row's place among the rows of its class (augment.balance_by)
    pa.field("fields", pa.string()),
    pa.field("region_mask_uri", pa.string()),
    pa.field("region_mask_bytes", pa.binary()),
    pa.field("class_rank", pa.int64()),
])


@dataclass
class RecipeColumns:
    """What a reader adds to each row for the recipe: the values of `columns` (JSON `fields`), the region mask,
    and with `class_column` the row's `class_rank`, counted on from `seen` (class key -> rows of that class before
    this file's rows: `planning.count_classes`)."""

    columns: tuple[str, ...] = ()
    class_column: str | None = None
    seen: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict[str, Any], clean: dict[str, Any]) -> str | None:
        """Fill `clean`'s recipe columns from the reader's `row`; the row's problem, if any."""
        from .augment import class_key

        values = {name: row.get(name) for name in self.columns if name in row}
        if "region_boxes" in row:
            values["region_boxes"] = row["region_boxes"]
        clean["fields"] = json.dumps(values, ensure_ascii=False, default=_json_value) if values else None
        problem = None
        mask = row.get("region_mask")
        if isinstance(mask, dict):  # the datasets image struct: its bytes win, else its path
            if not mask.get("bytes") and not mask.get("path"):
                problem = "region_mask is an image struct with neither bytes nor path"
            mask = mask.get("bytes") or mask.get("path")
        if isinstance(mask, str) and mask.strip():
            clean["region_mask_uri"] = mask.strip()
        elif isinstance(mask, (bytes, bytearray)) and mask:
            clean["region_mask_bytes"] = bytes(mask)
        elif mask is not None and problem is None and not (isinstance(mask, (str, bytes, bytearray)) and not mask):
            problem = f"region_mask must be a URI, bytes or an image struct, got {type(mask).__name__}"
        if self.class_column is not None:
            key = class_key(row.get(self.class_column))
            clean["class_rank"] = self.seen.get(key, 0)
            self.seen[key] = self.seen.get(key, 0) + 1
        return problem


_REGION_COLUMNS = {"region_mask", "region_boxes"}


def _json_value(value: Any) -> Any:
    """A recipe column's value JSON cannot hold as it is (bytes, a date): its text."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
# A shard's rows are numbered (shard index << 32) + sample: no shard is counted before the plan reads it.
SHARD_ROW_BITS = 32
# Samples the inspection reads of the first shard, for its columns and its bytes per sample.
PEEK_SAMPLES = 64
# Arrow types a carried column may have: values that JSON holds and Arrow rebuilds exactly.
_CARRIABLE = (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, pa.types.is_string,
              pa.types.is_large_string, pa.types.is_null)


@dataclass(frozen=True)
class InputSpec:
    """How an input's rows are read: what `inspect_input` found, handed to the read tasks.

    `image`: how rows hold their pictures: ``uri`` (a URI each), ``binary`` or ``struct`` (Parquet bytes or
    ``{bytes, path}``), ``member`` (a WebDataset member). `carry`: the carried columns (all of them but the job's for
    a WebDataset's ``"*"``: ``carry_all``). `class_names`: column -> class names. `carried_schema`: the Arrow types of
    the carried columns, `features`: their ``datasets`` features (a ClassLabel with its names), for the outputs.
    """

    format: str
    root: str
    image: str = "uri"
    carry: tuple[str, ...] = ()
    carry_all: bool = False
    class_names: dict[str, list[str]] = field(default_factory=dict)
    has_id: bool = True
    carried_schema: pa.Schema = field(default_factory=lambda: pa.schema([]))
    features: dict[str, Any] = field(default_factory=dict)
    folders: tuple[str, ...] = ()  # an ImageFolder's class folders, in class order

    @property
    def embedded(self) -> bool:
        """Whether pictures sit inside the input's files (read by the edit pass by row group or shard)."""
        return self.image in ("binary", "struct", "member")

    def describe(self) -> dict[str, Any]:
        """What the run file says of its input: format, carried columns and their features."""
        return {"format": self.format, "image": self.image, "carried": list(self.carried_schema.names),
                "features": self.features, "class_names": self.class_names,
                "carried_types": {f.name: str(f.type) for f in self.carried_schema},
                "carried_schema": base64.b64encode(self.carried_schema.serialize().to_pybytes()).decode()}


def carried_of(row: dict[str, Any]) -> dict[str, Any]:
    """A work row's or record's carried columns by name, as stored (a ClassLabel its index): `{}` when it has none.
    Class names are the run's `InputSpec.class_names` (`labels.class_names_of`)."""
    raw = row.get("carried")
    return json.loads(raw) if raw else {}


def carried_schema_of(described: dict[str, Any] | None) -> pa.Schema | None:
    """The carried columns' Arrow schema that `InputSpec.describe` wrote in a run file; None when it has none."""
    raw = (described or {}).get("carried_schema")
    if not raw:
        return None
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))
    except (ValueError, pa.ArrowException):
        return None


# --- telling the format -----------------------------------------------------------------------


def _kind_of_file(uri: str) -> str | None:
    name = posixpath.basename(uri.rstrip("/")).lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".tar"):
        return "webdataset"
    return None


def _hidden(path: str) -> bool:
    return any(part.startswith((".", "_")) for part in path.split("/"))


def detect_format(uri: str, requested: str, options: StorageOptions) -> str:
    """The input's format: `requested` unless ``auto``; else a file's from its extension, a folder's from what it
    holds. Raises ManifestError for a missing input, one of no known kind, or a folder of two kinds."""
    try:
        kind = file_type(uri, options)
    except StorageError as error:
        raise ManifestError(f"cannot open input: {error}") from error
    if kind == pafs.FileType.NotFound:
        raise ManifestError(f"input not found: {redact_uri(uri)}")
    if requested != "auto":
        return requested
    if kind == pafs.FileType.File:
        found = _kind_of_file(uri)
        if found is None:
            raise ManifestError(f"cannot tell the format of {redact_uri(uri)} from its name (.parquet or .tar); "
                                "set input.format")
        return found
    try:
        files = list_file_infos(uri, None, options)
    except StorageError as error:
        raise ManifestError(f"cannot list input folder {redact_uri(uri)}: {error}") from error
    kinds: dict[str, str] = {}
    for entry in files:
        path = relative(entry.uri, uri, options)
        if _hidden(path):
            continue
        found = _kind_of_file(path)
        if found is None and "/" in path and is_picture(path):
            found = "imagefolder"
        if found is not None:
            kinds.setdefault(found, path)
    # A Parquet manifest's pictures often sit beside it (images/...): they are its pictures, not a second input.
    if "parquet" in kinds:
        kinds.pop("imagefolder", None)
    if len(kinds) > 1:
        what = "; ".join(f"{name} ({example})" for name, example in sorted(kinds.items()))
        raise ManifestError(f"input folder {redact_uri(uri)} holds more than one kind of input: {what}; give a "
                            "folder of one kind, or set input.format")
    if not kinds:
        raise ManifestError(f"input folder {redact_uri(uri)} holds no .parquet file, .tar shard or class folder "
                            "of pictures")
    return next(iter(kinds))


# --- inspecting -------------------------------------------------------------------------------


def inspect_input(uri: str, input_config: Any = None, options: StorageOptions | None = None,
                  templated_targets: bool = False) -> Manifest:
    """Inspect the input at `uri` before any work (footers, the first samples of the first shard, a folder's
    listing) under the config's ``input`` section (None: defaults). `templated_targets`: the config's
    `prompts.targets` make the targets, so a Parquet manifest needs no target column. Raises ManifestError."""
    options = options or StorageOptions()
    requested = getattr(input_config, "format", "auto")
    carry = tuple(getattr(input_config, "carry_columns", ()))
    label_names = tuple(getattr(input_config, "label_names", ()))
    kind = detect_format(uri, requested, options)
    if kind == "parquet":
        return _inspect_parquet(uri, carry, label_names, options, templated_targets)
    if kind == "webdataset":
        return _inspect_webdataset(uri, carry, label_names, options)
    return _inspect_imagefolder(uri, carry, label_names, options)


def _carried_columns(available: Sequence[str], carry: tuple[str, ...], where: str) -> list[str]:
    if carry == ("*",):
        return [name for name in available if name not in JOB_COLUMNS]
    if "*" in carry:
        raise ManifestError('input.carry_columns: "*" carries every column; give it alone')
    missing = [name for name in carry if name not in available]
    if missing:
        raise ManifestError(f"input.carry_columns names {', '.join(missing)}, which {where} does not have (it has "
                            f"{', '.join(available) or 'no columns'})")
    return list(carry)


def _carriable(data_type: pa.DataType) -> bool:
    if any(check(data_type) for check in _CARRIABLE):
        return True
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _carriable(data_type.value_type)
    if pa.types.is_struct(data_type):
        return all(_carriable(f.type) for f in data_type)
    return False


def _carried_schema(schema: pa.Schema, names: list[str], explicit: bool) -> pa.Schema:
    fields = []
    for name in names:
        data_type = schema.field(name).type
        if _carriable(data_type):
            fields.append(pa.field(name, data_type))
        elif explicit:
            raise ManifestError(f"input.carry_columns: column {name!r} has type {data_type}, which cannot be "
                                "carried (numbers, strings, booleans, and lists and structs of them can)")
        else:
            log.warning("input column %r (%s) is not carried: only numbers, strings, booleans, and lists and "
                        "structs of them are", name, data_type)
    return pa.schema(fields)


def _check_class_columns(schema: pa.Schema, class_names: dict[str, list[str]]) -> dict[str, list[str]]:
    """The class names of columns the input has, as integers (a label column of names is no index)."""
    return {name: names for name, names in class_names.items()
            if name in schema.names and pa.types.is_integer(schema.field(name).type)}


def _inspect_parquet(uri: str, carry: tuple[str, ...], label_names: tuple[str, ...],
                     options: StorageOptions, templated_targets: bool = False) -> Manifest:
    manifest = inspect_manifest(uri, options, templated_targets=templated_targets)
    schema = manifest.schema
    first = next((file for file in manifest.files), None)
    features = None
    if first is not None:
        filesystem, path = resolve(first.uri, options)
        try:
            features = hf_features(pq.read_schema(path, filesystem=filesystem).metadata)
        except (OSError, pa.ArrowException) as error:
            raise ManifestError(f"cannot read manifest file {redact_uri(first.uri)}: {error}") from error
    names = [name for name in schema.names]
    carried = _carried_columns(names, carry, "the manifest")
    carried_schema = _carried_schema(schema, carried, carry != ("*",))
    class_names = _check_class_columns(schema, class_names_of(features=features, label_names=label_names))
    image = image_struct_kind(schema.field("image").type)
    spec = InputSpec(
        format="parquet", root=uri, image=image, carry=tuple(carried_schema.names), class_names=class_names,
        has_id="id" in names, carried_schema=carried_schema,
        features=features_of(carried_schema, features, class_names),
    )
    return Manifest(manifest.files, schema, manifest.base_dir, spec)


def _inspect_webdataset(uri: str, carry: tuple[str, ...], label_names: tuple[str, ...],
                        options: StorageOptions) -> Manifest:
    try:
        if file_type(uri, options) == pafs.FileType.File:
            infos = [(uri, _size(uri, options))]
        else:
            infos = [(entry.uri, entry.size) for entry in list_file_infos(uri, ".tar", options)
                     if not _hidden(relative(entry.uri, uri, options))]
    except StorageError as error:
        raise ManifestError(f"cannot list input {redact_uri(uri)}: {error}") from error
    if not infos:
        raise ManifestError(f"input folder {redact_uri(uri)} holds no .tar shard")
    peek, per_sample = _peek_shard(infos[0][0], options)
    files = tuple(ManifestFile(shard, max(1, math.ceil(size / per_sample)), index << SHARD_ROW_BITS)
                  for index, (shard, size) in enumerate(infos))
    columns: dict[str, None] = {}
    for row in peek:
        columns.update(dict.fromkeys(name for name in row if name not in ("input_error",)))
    if carry == ("*",):
        carried = [name for name in columns if name not in JOB_COLUMNS]
    else:
        carried = list(carry)
        if "*" in carried:
            raise ManifestError('input.carry_columns: "*" carries every column; give it alone')
    schema = pa.schema([pa.field(name, _infer_type([row.get(name) for row in peek])) for name in carried])
    carried_schema = _carried_schema(schema, carried, carry != ("*",))
    class_names = class_names_of(label_names=label_names)
    spec = InputSpec(
        format="webdataset", root=uri, image="member", carry=tuple(carried_schema.names), carry_all=carry == ("*",),
        class_names=class_names, carried_schema=carried_schema,
        features=features_of(carried_schema, None, class_names),
    )
    return Manifest(files, pa.schema([pa.field(name, pa.string()) for name in columns]),
                    manifest_base_dir(uri, options), spec)


def _size(uri: str, options: StorageOptions) -> int:
    filesystem, path = resolve(uri, options)
    return filesystem.get_file_info(path).size or 0


def _infer_type(values: list[Any]) -> pa.DataType:
    try:
        data_type = pa.array(values).type
    except (pa.ArrowException, TypeError, ValueError):
        return pa.string()
    return pa.int64() if pa.types.is_null(data_type) else data_type


def _peek_shard(uri: str, options: StorageOptions) -> tuple[list[dict], float]:
    """The first PEEK_SAMPLES rows of a shard, and its bytes per sample (to size the plan)."""
    rows: list[dict] = []
    try:
        for row in shard_samples(uri, options):
            rows.append(row)
            if len(rows) >= PEEK_SAMPLES:
                break
    except ShardError as error:
        raise ManifestError(str(error)) from None
    except StorageError as error:
        raise ManifestError(f"cannot read shard {redact_uri(uri)}: {error}") from error
    if not rows:
        return rows, 1e6
    # Bytes per sample, from the tar's own offsets: read headers only up to the last peeked sample.
    filesystem, path = resolve(uri, options)
    read = 0
    with filesystem.open_input_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        keys = set()
        for info in tar:
            key, _ = split_key(info.name)
            keys.add(key)
            if len(keys) > len(rows):
                break
            read = info.offset_data + info.size
    return rows, max(512.0, read / len(rows))


def _inspect_imagefolder(uri: str, carry: tuple[str, ...], label_names: tuple[str, ...],
                         options: StorageOptions) -> Manifest:
    try:
        listing = [entry.uri for entry in list_file_infos(uri, None, options)]
        metadata = read_metadata(uri, options)
    except StorageError as error:
        raise ManifestError(f"cannot read input folder {redact_uri(uri)}: {error}") from error
    classes = class_folders(uri, listing, options)
    if not classes:
        raise ManifestError(f"input folder {redact_uri(uri)} has no class folder of pictures (<root>/<class>/<file>)")
    class_names = class_names_of(label_names=label_names, folders=list(classes))
    order = class_names[LABEL_COLUMN]
    files, first = [], 0
    for folder, pictures in classes.items():
        files.append(ManifestFile(folder, len(pictures), first))
        first += len(pictures)
    columns = {LABEL_COLUMN: None}
    for row in metadata.values():
        columns.update(dict.fromkeys(row))
    available = [name for name in columns]
    carried = _carried_columns(available, carry, "the folder (label and metadata.jsonl)")
    values = list(metadata.values())[:1000]
    schema = pa.schema([pa.field(name, pa.int64() if name == LABEL_COLUMN else
                                 _infer_type([row.get(name) for row in values])) for name in carried])
    carried_schema = _carried_schema(schema, carried, carry != ("*",))
    spec = InputSpec(
        format="imagefolder", root=uri, image="uri", carry=tuple(carried_schema.names), class_names=class_names,
        carried_schema=carried_schema, features=features_of(carried_schema, None, class_names),
        folders=tuple(order),
    )
    return Manifest(tuple(files), pa.schema([pa.field(name, pa.string()) for name in available]), uri, spec)


# --- reading rows -------------------------------------------------------------------------------


def _conform(rows: list[dict[str, Any]], spec: InputSpec, recipe: RecipeColumns | None = None) -> pa.Table:
    """Rows (dicts of any columns) as an `INPUT_ROW_SCHEMA` table: the manifest's columns checked (a value of the
    wrong type is the row's input_error, and null), the carried ones as JSON, the class indexes checked."""
    out = []
    for row in rows:
        problem = row.get("input_error")
        clean = {"row_index": row["row_index"]}
        for column in _TYPED_COLUMNS:
            value = row.get(column.name)
            if value is not None and not _fits(column.kind, value):
                problem = problem or f"{column.name} must be {_KIND_TEXT[column.kind]}, got {type(value).__name__}"
                value = None
            clean[column.name] = value
        if clean["id"] is not None:
            clean["id"] = str(clean["id"])
        for name, names in spec.class_names.items():
            problem = problem or (label_problem(name, row.get(name), names) if name in row else None)
        if spec.carry_all:
            carried = {name: value for name, value in row.items() if name not in JOB_COLUMNS
                       and name not in ("row_index", "input_error", "carried")}
        else:
            carried = {name: row.get(name) for name in spec.carry}
        clean["carried"] = json.dumps(carried, ensure_ascii=False, sort_keys=True) if carried else None
        if recipe is not None:
            recipe_problem = recipe.add(row, clean)  # fills the recipe's columns whatever the row's problem
            problem = problem or recipe_problem
        clean["input_error"] = problem
        out.append(clean)
    return pa.Table.from_pylist(out, schema=INPUT_ROW_SCHEMA)


_KIND_TEXT = {"string": "a string", "integer": "an integer in [-2**63, 2**63)", "string list": "a list of strings",
              "image": "a string"}


def _fits(kind: str, value: Any) -> bool:
    if kind in ("string", "image"):
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63
    return isinstance(value, (list, tuple)) and all(item is None or isinstance(item, str) for item in value)


def read_input_rows(batch: pa.Table, *, options: StorageOptions, spec: InputSpec | None = None,
                    rows_per_block: int = 1024, extra_columns: Sequence[str] = (),
                    class_column: str | None = None) -> Iterator[pa.Table]:
    """The input rows (`INPUT_ROW_SCHEMA`) of each file named in `batch` (`file`, `first_row`, and with
    `class_column` its `class_offsets`: JSON class key -> rows of that class in the files before it), `rows_per_block`
    at a time, without the pictures of an embedded input. `extra_columns`: the columns the recipe reads (prompt
    templates, augment, regions), in each row's `fields`. Raises ManifestError naming a file that cannot be read."""
    spec = spec or InputSpec(format="parquet", root="")
    offsets = (batch.column("class_offsets").to_pylist() if "class_offsets" in batch.column_names
               else [None] * batch.num_rows)
    for uri, first_row, file_offsets in zip(batch.column("file").to_pylist(), batch.column("first_row").to_pylist(),
                                            offsets):
        recipe = RecipeColumns(tuple(extra_columns), class_column, json.loads(file_offsets) if file_offsets else {})
        try:
            if spec.format == "webdataset":
                yield from _blocks(_numbered(shard_samples(uri, options), first_row), spec, rows_per_block, recipe)
            elif spec.format == "imagefolder":
                yield from _folder_blocks(uri, first_row, spec, options, rows_per_block, recipe)
            else:
                yield from _parquet_blocks(uri, first_row, spec, options, rows_per_block, recipe)
        except ShardError as error:
            raise ManifestError(str(error)) from None
        except StorageError as error:
            raise manifest_file_error(uri, error) from None
        except (OSError, pa.ArrowException) as error:
            # The footers were read before the run; a page behind them can still be corrupt. Bad input, named.
            raise manifest_file_error(uri, error) from None


def _numbered(rows: Iterator[dict], first_row: int) -> Iterator[dict]:
    for index, row in enumerate(rows):
        row["row_index"] = first_row + index
        yield row


def _blocks(rows: Iterator[dict], spec: InputSpec, rows_per_block: int,
            recipe: RecipeColumns | None = None) -> Iterator[pa.Table]:
    block = []
    for row in rows:
        block.append(row)
        if len(block) >= rows_per_block:
            yield _conform(block, spec, recipe)
            block = []
    if block:
        yield _conform(block, spec, recipe)


def _folder_blocks(folder: str, first_row: int, spec: InputSpec, options: StorageOptions,
                   rows_per_block: int, recipe: RecipeColumns | None = None) -> Iterator[pa.Table]:
    metadata = read_metadata(spec.root, options)
    index = spec.folders.index(folder) if folder in spec.folders else None
    rows = folder_rows(spec.root, folder, index, metadata, options)
    yield from _blocks(_numbered(rows, first_row), spec, rows_per_block, recipe)


def _parquet_blocks(uri: str, first_row: int, spec: InputSpec, options: StorageOptions,
                    rows_per_block: int, recipe: RecipeColumns | None = None) -> Iterator[pa.Table]:
    filesystem, path = resolve(uri, options)
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        present = parquet.schema_arrow.names
        wanted = [c.name for c in MANIFEST_COLUMNS if c.name in present and (c.name != "image" or spec.image == "uri")]
        recipe = recipe or RecipeColumns()
        recipe_columns = (*recipe.columns, *([recipe.class_column] if recipe.class_column else []))
        extra = [name for name in dict.fromkeys([*spec.carry, *spec.class_names, *recipe_columns]) if name in present
                 and name not in wanted]
        relative_name = (relative(uri, spec.root, options) if spec.root else "") or posixpath.basename(uri)
        in_file = 0
        for group in range(parquet.num_row_groups):
            images = image_values(parquet, group, spec.image, uri, in_file) if spec.image != "uri" else None
            for record_batch in parquet.iter_batches(batch_size=rows_per_block, row_groups=[group],
                                                     columns=wanted + extra):
                table = pa.Table.from_batches([record_batch])
                if spec.image == "uri":
                    table = resolve_images(table, uri)
                columnar = None
                if spec.image == "uri" and spec.has_id and not extra and not _REGION_COLUMNS & set(wanted):
                    # a manifest of URIs as before: columnar, no row of Python objects (10^7-row plans)
                    columnar = _columnar(table, first_row + in_file)
                if columnar is not None:
                    yield columnar
                    in_file += table.num_rows
                    continue
                rows = table.to_pylist()
                if images is not None:
                    for row, (locator, problem) in zip(rows, images):
                        row["image"], row["input_error"] = locator, problem
                for k, row in enumerate(rows):
                    row["row_index"] = first_row + in_file + k
                    if not spec.has_id:
                        row["id"] = f"{relative_name}:{in_file + k}"
                in_file += len(rows)
                yield _conform(rows, spec, recipe)


def _columnar(table: pa.Table, first_row: int) -> pa.Table | None:
    """A block of a manifest of URIs with ids and nothing carried, as `INPUT_ROW_SCHEMA` without leaving Arrow; None
    when a column's values do not all fit its type (the block is then read row by row)."""
    n = table.num_rows
    columns = []
    for field in INPUT_ROW_SCHEMA:
        if field.name == "row_index":
            columns.append(pa.array(range(first_row, first_row + n), pa.int64()))
        elif field.name in table.column_names:
            column = table.column(field.name)
            try:
                columns.append(column if column.type == field.type else column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None  # a value that does not fit (a uint64 seed past int64): row by row, each row's error named
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=INPUT_ROW_SCHEMA)


# --- reading one picture ---------------------------------------------------------------------------


def read_source_image(uri: str, options: StorageOptions | None = None) -> bytes:
    """The bytes of an input picture named by a record's `source_image_uri`: a URI, or the locator of a picture
    embedded in a Parquet file (``#row=<k>``) or a WebDataset shard (``<shard>.tar#<member>``). Raises
    StorageError."""
    options = options or StorageOptions()
    located = split_locator(uri)
    if located is not None:
        return read_embedded_image(located[0], located[1], options)
    shard, hash_, member = uri.partition(".tar#")
    if hash_ and member:
        return read_shard_member(shard + ".tar", member, options)
    return read_bytes(uri, options)
