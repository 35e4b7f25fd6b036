"""The input manifest: its schema, checked before any work, and its rows turned into edit requests.

A manifest is Parquet (one file, or a folder of ``*.parquet`` files) with one row per image. A row
yields one edit per target prompt; the edits of one row share the image and its inversion.
Problems of a single row (a null prompt, a missing image) are not schema errors: they become that
row's error record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from diffedit_batch.seeds import seed_problem

from .storage import (
    StorageError,
    StorageOptions,
    bounded,
    file_type,
    list_files,
    parent_uri,
    redact_uri,
    resolve,
    resolve_relative,
)
from .templates import has_caption

__all__ = [
    "JOB_COLUMNS",
    "MANIFEST_COLUMNS",
    "EditRequest",
    "ManifestColumn",
    "Manifest",
    "ManifestError",
    "ManifestFile",
    "check_manifest_schema",
    "expand_edits",
    "has_source",
    "image_struct_kind",
    "inspect_manifest",
    "manifest_base_dir",
    "manifest_files",
    "manifest_reference_markdown",
    "needs_caption",
    "nothing_to_edit",
    "is_reserved_id",
    "manifest_file_error",
    "read_manifest_schema",
    "resolve_images",
    "row_id_of",
    "target_edit_id",
    "validate_request",
]


class ManifestError(ValueError):
    """The manifest cannot be used at all: missing, unreadable, or with a wrong schema."""


@dataclass(frozen=True)
class ManifestColumn:
    """One manifest column: ``kind`` is ``"string"``, ``"integer"`` or ``"string list"``."""

    name: str
    kind: str
    required: bool
    description: str


MANIFEST_COLUMNS: tuple[ManifestColumn, ...] = (
    ManifestColumn(
        "id", "string", False,
        "Unique id of the row; output names derive from it. Ids ending in '#<number>' are reserved for the edits "
        "of target_prompts and rejected. Without an id column a row's id is its place, '<file>:<row>'.",
    ),
    ManifestColumn(
        "image", "image", True,
        "The input picture: a URI, absolute (s3://, gs://, /path) or relative to the folder of the manifest file "
        "that holds the row (in a folder of files, each file's own folder); or the picture's bytes (binary); or a "
        "Hugging Face datasets image struct {bytes, path} (bytes win; a relative path resolves as a URI does).",
    ),
    ManifestColumn("source_prompt", "string", False, "What the image shows now (e.g. 'a bowl of fruits')."),
    ManifestColumn("target_prompt", "string", False, "What the edited image should show (e.g. 'a bowl of pears')."),
    ManifestColumn(
        "target_prompts", "string list", False,
        "Several target prompts for one image; they share its inversion. Edit ids are '<id>#<k>'.",
    ),
    ManifestColumn(
        "inversion_prompt", "string", False,
        "Prompt that conditions the DDIM inversion, when it should differ from the source prompt.",
    ),
    ManifestColumn("seed", "integer", False, "Seed of this row's noise; derived from the job seed and id when null."),
    ManifestColumn("source_concept", "string", False, "Source concept (e.g. 'fruits'), expanded into prompts by the Flan-T5 stage."),
    ManifestColumn("target_concept", "string", False, "Target concept (e.g. 'pears'), expanded into prompts by the Flan-T5 stage."),
    ManifestColumn(
        "region_mask", "picture", False,
        "A grayscale picture (URI, relative as image is; or its bytes), white = the region (region.mode says "
        "whether the edit keeps to it or out of it). One of another size than the image is resized "
        "nearest-neighbour to it.",
    ),
    ManifestColumn(
        "region_boxes", "box list", False,
        "Region boxes [[x, y, w, h], ...] in pixels of the image (COCO order), rounded outward and clipped to the "
        "picture; a box of negative size makes the row invalid. Read from another column with region.boxes_from.",
    ),
)



def manifest_reference_markdown() -> str:
    """A Markdown table of ``MANIFEST_COLUMNS``, for docs/reference/manifest.md."""
    lines = ["| column | type | required | description |", "|---|---|---|---|"]
    for column in MANIFEST_COLUMNS:
        required = "yes" if column.required else "no"
        lines.append(f"| `{column.name}` | {column.kind} | {required} | {column.description} |")
    return "\n".join(lines) + "\n"


JOB_COLUMNS = frozenset(column.name for column in MANIFEST_COLUMNS)
"""The input columns the job itself reads; ``input.carry_columns: "*"`` carries every other one."""

# A row needs one of these to have anything to edit towards.
_TARGET_COLUMNS = ("target_prompt", "target_prompts", "target_concept")


# --- schema -----------------------------------------------------------------------------------


def _is_string(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


def _matches(kind: str, data_type: pa.DataType, required: bool) -> bool:
    # An optional column that is null in every row comes out of pandas as type null: that is fine.
    if pa.types.is_null(data_type) and not required:
        return True
    if kind == "string":
        return _is_string(data_type)
    if kind == "integer":
        return pa.types.is_integer(data_type)
    if kind == "image":
        return _is_string(data_type) or image_struct_kind(data_type) is not None
    if kind == "picture":  # a URI, bytes, or the datasets image struct {bytes, path}
        return _is_string(data_type) or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) or (
            pa.types.is_struct(data_type) and bool({"bytes", "path"} & {f.name for f in data_type}))
    if kind == "box list":
        if not (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)
                or pa.types.is_fixed_size_list(data_type)):
            return False
        inner = data_type.value_type
        return (pa.types.is_list(inner) or pa.types.is_large_list(inner) or pa.types.is_fixed_size_list(inner)) and (
            pa.types.is_integer(inner.value_type) or pa.types.is_floating(inner.value_type)
            or pa.types.is_null(inner.value_type))
    if kind == "string list":
        is_list = (
            pa.types.is_list(data_type)
            or pa.types.is_large_list(data_type)
            or pa.types.is_list_view(data_type)
            or pa.types.is_large_list_view(data_type)
        )
        return is_list and (
            _is_string(data_type.value_type) or pa.types.is_null(data_type.value_type)
        )
    raise ValueError(f"unknown column kind {kind!r}")


_EXPECTED = {"string": "a string", "integer": "an integer", "string list": "a list of strings",
             "picture": "a URI string, binary, or an image struct {bytes, path}",
             "box list": "a list of [x, y, w, h] number lists",
             "image": "a URI string, binary, or an image struct {bytes, path}"}


def image_struct_kind(data_type: pa.DataType) -> str | None:
    """How an `image` column of `data_type` holds its pictures: ``"uri"`` (strings), ``"binary"`` (the bytes), or
    ``"struct"`` (Hugging Face ``datasets``' ``{bytes, path}``); None for any other type."""
    if _is_string(data_type):
        return "uri"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type):
        return "binary"
    if pa.types.is_struct(data_type):
        names = {data_type.field(i).name for i in range(data_type.num_fields)}
        if names and names <= {"bytes", "path"}:
            return "struct"
    return None


def check_manifest_schema(schema: pa.Schema, templated_targets: bool = False) -> None:
    """Raise ManifestError naming every missing or mistyped manifest column, all in one message.

    Accepts any integer width, string/large_string (also dictionary-encoded), list/large_list of
    strings; an `image` of URIs, bytes or ``{bytes, path}`` structs. Extra columns are carried
    (``input.carry_columns``), read by templates and regions, or ignored. A manifest with none of target_prompt,
    target_prompts, target_concept is an error too, unless the config's `prompts.targets` make the targets
    (`templated_targets`): no row of it could ever be edited.
    """
    problems = []
    duplicated = sorted({n for n in schema.names if schema.names.count(n) > 1})
    for column in MANIFEST_COLUMNS:
        if column.name in duplicated:
            continue  # reported below; get_field_index cannot tell which of the copies is meant
        index = schema.get_field_index(column.name)
        if index < 0:
            if column.required:
                problems.append(f"required column {column.name!r} is missing")
            continue
        data_type = schema.field(index).type
        if not _matches(column.kind, data_type, column.required):
            problems.append(
                f"column {column.name!r} has type {data_type}, expected {_EXPECTED[column.kind]}"
            )
    if not templated_targets and not any(name in schema.names for name in _TARGET_COLUMNS):
        problems.append(f"no target column: add one of {', '.join(_TARGET_COLUMNS)}")
    if duplicated:
        problems.append(f"duplicated column names: {', '.join(duplicated)}")
    if problems:
        raise ManifestError("manifest schema is invalid: " + "; ".join(problems))


def _manifest_type(uri: str, options: StorageOptions | None) -> pafs.FileType:
    try:
        return file_type(uri, options)
    except StorageError as exc:
        raise ManifestError(f"cannot open manifest: {exc}") from exc


def manifest_files(uri: str, options: StorageOptions | None = None) -> list[str]:
    """The Parquet files of a manifest: ``[uri]`` for a file, the sorted ``*.parquet`` under a folder.

    Files and folders whose name starts with ``.`` or ``_`` are skipped at any depth, as the result manifest's
    reader skips them: temp files, ``_SUCCESS``, and the attempts of Spark's and Hadoop's committers
    (``_temporary/0/...``), which hold rows no writer committed.
    Raises ManifestError when the manifest is missing or the folder holds no Parquet file.
    """
    kind = _manifest_type(uri, options)
    if kind == pafs.FileType.File:
        return [uri]
    if kind == pafs.FileType.NotFound:
        raise ManifestError(f"manifest not found: {redact_uri(uri)}")
    try:
        _, base = resolve(uri, options)
        base = base.rstrip("/")
        files = [f for f in list_files(uri, ".parquet", options)
                 if not _uncommitted(resolve(f, options)[1][len(base):].strip("/"))]
    except StorageError as exc:
        raise ManifestError(f"cannot list manifest folder {redact_uri(uri)}: {exc}") from exc
    if not files:
        raise ManifestError(f"manifest folder {redact_uri(uri)} holds no .parquet file")
    return files


def _uncommitted(relative_path: str) -> bool:
    """Whether a path under a manifest folder is no part of it: any of its names starts with ``.`` or ``_``."""
    return any(name.startswith((".", "_")) for name in relative_path.split("/"))


def manifest_base_dir(uri: str, options: StorageOptions | None = None) -> str:
    """The folder that relative image URIs of the manifest at ``uri`` are relative to.

    The manifest's parent folder for a single file, the folder itself for a folder of files.
    """
    if _manifest_type(uri, options) == pafs.FileType.File:
        return parent_uri(uri)
    return uri.rstrip("/") or uri


@dataclass(frozen=True)
class ManifestFile:
    """One Parquet file of a manifest: its URI, its row count, and the position of its first row in the
    manifest (files in sorted order), so every row has a global `row_index`."""

    uri: str
    rows: int
    first_row: int


@dataclass(frozen=True)
class Manifest:
    """What the footers of a manifest's files say: the files, their unified schema and the total row count."""

    files: tuple[ManifestFile, ...]
    schema: pa.Schema
    base_dir: str  # relative image URIs resolve against this
    # how its rows are read (format, carried columns, class names): `data.inputs.inspect_input` sets it
    spec: Any = None

    @property
    def rows(self) -> int:
        return sum(file.rows for file in self.files)


def _read_footer(file_uri: str, options: StorageOptions | None,
                 templated_targets: bool = False) -> tuple[pa.Schema, int]:
    options = options or StorageOptions()
    filesystem, path = resolve(file_uri, options)
    try:
        metadata = bounded(filesystem, lambda: pq.read_metadata(path, filesystem=filesystem),
                           f"reading {redact_uri(file_uri)}", options)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException, StorageError) as exc:
        raise ManifestError(f"cannot read manifest file {redact_uri(file_uri)}: {exc}") from exc
    try:
        check_manifest_schema(schema, templated_targets)
    except ManifestError as exc:
        raise ManifestError(f"{redact_uri(file_uri)}: {exc}") from None
    return schema.remove_metadata(), metadata.num_rows


def inspect_manifest(uri: str, options: StorageOptions | None = None, threads: int = 16,
                     templated_targets: bool = False) -> Manifest:
    """Read the footers of every file of the manifest at `uri` (no row data), in parallel threads.

    Every file's schema is checked with ``check_manifest_schema`` (the error names the file) and the files must
    agree. Raises ManifestError. Memory is per file, not per row.
    """
    from concurrent.futures import ThreadPoolExecutor

    uris = manifest_files(uri, options)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        footers = list(pool.map(lambda file_uri: _read_footer(file_uri, options, templated_targets), uris))
    try:
        schema = pa.unify_schemas([schema for schema, _ in footers], promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise ManifestError(f"manifest files of {redact_uri(uri)} disagree on their schema: {exc}") from exc
    files, first_row = [], 0
    for file_uri, (_, rows) in zip(uris, footers):
        files.append(ManifestFile(file_uri, rows, first_row))
        first_row += rows
    return Manifest(tuple(files), schema, manifest_base_dir(uri, options))


def resolve_images(table: pa.Table, file_uri: str, columns: tuple[str, ...] = ("image", "region_mask")) -> pa.Table:
    """``table`` (rows of the manifest file at ``file_uri``) with each relative URI of ``columns`` (``image``, and
    ``region_mask`` when it holds URIs) resolved against that file's own folder, so a file reads the same given
    alone or within a folder of files. One that cannot be resolved (it climbs out of its bucket) stays as it is:
    reading it fails as that row's storage error."""
    for column in columns:
        if column in table.column_names and _is_string(table.schema.field(column).type):
            table = _resolve_column(table, column, parent_uri(file_uri))
    return table


def _resolve_column(table: pa.Table, column: str, base_dir: str) -> pa.Table:
    def resolved(image: Any) -> Any:
        if not isinstance(image, str) or not image.strip():
            return image
        try:
            return resolve_relative(image.strip(), base_dir)
        except StorageError:
            return image

    images = pa.array([resolved(image) for image in table.column(column).to_pylist()], pa.string())
    return table.set_column(table.column_names.index(column), column, images)


def manifest_file_error(file_uri: str, error: BaseException) -> ManifestError:
    """The ManifestError of a manifest file whose rows cannot be read (a corrupt page behind an intact footer)."""
    detail = " ".join(str(error).split())[:300]
    return ManifestError(f"manifest file {redact_uri(file_uri)} cannot be read ({type(error).__name__}: {detail}); "
                         "write it again, or move it out of the manifest folder")


def read_manifest_schema(uri: str, options: StorageOptions | None = None) -> pa.Schema:
    """The manifest's unified schema, read from the Parquet footers only (see ``inspect_manifest``)."""
    return inspect_manifest(uri, options).schema


# --- rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditRequest:
    """One edit: an image, a source and a target. Plain Python values only.

    ``edit_id`` is the row's id, or ``f"{row_id}#{k}"`` for the k-th entry of ``target_prompts``
    (then ``target_index`` is k; it is None for the ``target_prompt`` edit). Prompts are stripped;
    an empty string becomes None. Non-string prompts are kept as they are for ``validate_request``.
    """

    edit_id: str | None
    row_id: str | None
    source_image_uri: str | None
    source_prompt: str | None = None
    target_prompt: str | None = None
    inversion_prompt: str | None = None
    seed: int | None = None
    source_concept: str | None = None
    target_concept: str | None = None
    target_index: int | None = None
    # the input row's carried columns (`input.carry_columns`), JSON of {column: value as stored}
    carried: str | None = None
    # what the reader found wrong with the row (an image struct with neither bytes nor path, a class index out of
    # range, a WebDataset sample without a picture): the row's invalid_row record says it
    input_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for a Ray Data row). Shallow: the values are plain already, and
        `dataclasses.asdict`'s deep copy was half the cost of planning a manifest."""
        return dict(vars(self))


def _plain(value: Any) -> Any:
    """None for null-likes (None, NaN, pandas NA); numpy scalars become Python scalars."""
    if value is None or type(value) is str or type(value) is int:  # what Arrow's rows hold, first: a plan is 10^7 rows
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _plain(value.item())
    return value


def _prompt(value: Any) -> Any:
    if type(value) is str:
        return value.strip() or None
    value = _plain(value)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _seed(value: Any) -> Any:
    value = _plain(value)
    # pandas turns an integer column with nulls into floats; 3.0 is still seed 3.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # an int, None, or something validate_request rejects


def _target_list(value: Any) -> list[Any]:
    value = _plain(value)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [value]  # mistyped; validate_request will say so
    return list(value)


# The edit ids of target_prompts are '<row id>#<k>'. Row ids of that form are rejected, so an edit id always
# names one (row, target) and its row id is the edit id less any '#<k>' suffix.
_TARGET_SUFFIX = re.compile(r"#\d+\Z")


def target_edit_id(row_id: str, k: int) -> str:
    """The edit id of the k-th entry of a row's `target_prompts`."""
    return f"{row_id}#{k}"


def is_reserved_id(row_id: str) -> bool:
    """Whether a row id has the form of a generated edit id (ends in '#<number>'): such rows are rejected."""
    return bool(_TARGET_SUFFIX.search(row_id))


def row_id_of(edit_id: str) -> str:
    """The id of the manifest row an edit id belongs to (for records that do not carry their `row_id`)."""
    return _TARGET_SUFFIX.sub("", edit_id)


def expand_edits(row: dict[str, Any], base_dir: str | None = None) -> list[EditRequest]:
    """The edit requests of one manifest row, always at least one (so every row ends as a record).

    ``target_prompt`` comes first (edit id = row id), then each ``target_prompts`` entry k (edit id
    ``"<id>#<k>"``). A row with no target prompt at all gives one request (target_prompt None) that
    carries ``target_concept`` or fails validation. With ``base_dir`` a relative image URI is
    resolved against it.
    """
    row_id = _plain(row.get("id"))
    row_id = None if row_id is None else str(row_id)
    image = _plain(row.get("image"))
    if isinstance(image, str) and image.strip():
        image = image.strip()
        if base_dir is not None:
            try:
                image = resolve_relative(image, base_dir)
            except StorageError:
                pass  # left relative: reading it fails later with a per-row storage error
    else:
        image = None
    common = dict(
        row_id=row_id,
        source_image_uri=image,
        source_prompt=_prompt(row.get("source_prompt")),
        inversion_prompt=_prompt(row.get("inversion_prompt")),
        seed=_seed(row.get("seed")),
        source_concept=_prompt(row.get("source_concept")),
        target_concept=_prompt(row.get("target_concept")),
        carried=_plain(row.get("carried")),
        input_error=_plain(row.get("input_error")),
    )
    requests = []
    single = _prompt(row.get("target_prompt"))
    listed = _target_list(row.get("target_prompts"))
    if single is not None or not listed:
        requests.append(EditRequest(edit_id=row_id, target_prompt=single, **common))
    for k, prompt in enumerate(listed):
        edit_id = None if row_id is None else target_edit_id(row_id, k)
        requests.append(
            EditRequest(edit_id=edit_id, target_prompt=_prompt(prompt), target_index=k, **common)
        )
    return requests


def validate_request(req: EditRequest, caption_available: bool = False) -> str | None:
    """A message saying why ``req`` cannot be edited, or None if it can.

    A target is a target prompt or a target concept. A source is a source prompt or a source
    concept; with ``caption_available`` a captioner supplies a missing source.
    """
    if not req.row_id:
        return "row has no id"
    if req.input_error:
        return req.input_error
    if is_reserved_id(req.row_id):
        return (
            f"id {req.row_id!r} ends in '#<number>', the form reserved for the edits of target_prompts "
            "('<id>#<k>'); give the row another id"
        )
    if not isinstance(req.source_image_uri, str) or not req.source_image_uri:
        return "image is missing or empty"
    for name in ("source_prompt", "target_prompt", "inversion_prompt", "source_concept", "target_concept"):
        value = getattr(req, name)
        if value is not None and not isinstance(value, str):
            where = f"target_prompts[{req.target_index}]" if name == "target_prompt" and req.target_index is not None else name
            return f"{where} must be a string, got {type(value).__name__}"
    if req.target_prompt is None and req.target_concept is None:
        if req.target_index is not None:
            return f"target_prompts[{req.target_index}] is missing or empty"
        return "no target: target_prompt, target_prompts and target_concept are all missing or empty"
    if not has_source(req.source_prompt, req.source_concept) and not caption_available:
        return (
            "no source: source_prompt and source_concept are missing or empty, "
            "and no captioner is configured to supply one"
        )
    same = _same_target_as_source(req)
    if same is not None:
        return same
    if req.seed is not None:
        return seed_problem(req.seed)
    return None


def _same_target_as_source(req: EditRequest) -> str | None:
    target_name = f"target_prompts[{req.target_index}]" if req.target_index is not None else "target_prompt"
    return nothing_to_edit(req.source_prompt, req.target_prompt, req.source_concept, req.target_concept, target_name)


def nothing_to_edit(source_prompt: str | None, target_prompt: str | None, source_concept: str | None,
                    target_concept: str | None, target_name: str = "target_prompt") -> str | None:
    """Why an edit has nothing to edit, or None: its target (prompt or concept, whichever the edit uses) says what
    its source says, up to case and spacing. DiffEdit's mask is where the two disagree; with nothing to disagree on
    it covers the whole picture, and the 'edit' is a new picture. The edit stage asks again once a caption has
    stood in for a missing source."""
    if target_prompt is not None and source_prompt is not None:
        pair = (target_name, target_prompt, "source_prompt", source_prompt)
    elif target_prompt is None and source_prompt is None and source_concept is not None:
        pair = ("target_concept", target_concept, "source_concept", source_concept)
    else:
        return None  # a prompt against a concept's captions: different texts, whatever they say
    target_key, target, source_key, source = pair
    if not isinstance(target, str) or not isinstance(source, str):
        return None
    if " ".join(target.split()).casefold() != " ".join(source.split()).casefold():
        return None
    return (f"{target_key} equals {source_key} ({_short(source)}): nothing to edit, the mask would cover the whole "
            "picture; give a target that differs from the source")


def _short(text: str, most: int = 80) -> str:
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."


def has_source(source_prompt: str | None, source_concept: str | None) -> bool:
    """Whether an edit says what its picture shows now: a source prompt or a source concept (stripped, as
    `expand_edits` leaves them: blank is None)."""
    return source_prompt is not None or source_concept is not None


def needs_caption(source_prompt: str | None, source_concept: str | None, caption_inversion: bool,
                  target_prompt: str | None = None) -> bool:
    """Whether a BLIP caption is made for an edit's picture: the config asks for caption inversion, the edit
    has no source (the caption then stands in for it), or a prompt template left `{caption}` in its source or
    target prompt. The one rule the manifest scan and the captions stage share."""
    return (caption_inversion or not has_source(source_prompt, source_concept) or has_caption(source_prompt)
            or has_caption(target_prompt))
