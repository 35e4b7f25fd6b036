"""Export the successful edits as a Parquet image dataset for training pipelines.

With candidates (``candidates.count`` > 1) the successful edits are the kept candidates: a filtered one is never
exported, even when ``candidates.keep_rejected`` wrote its pictures (the report shows them).

Two layouts, both Parquet with Hugging Face ``datasets`` feature metadata (the ``huggingface`` key), so

    datasets.load_dataset("parquet", data_files="OUT/part-*.parquet")

decodes the image columns as PIL images; any Parquet reader sees ``{bytes, path}`` structs:

- ``diffedit`` (default): the edit, its mask and the source picture (``image``, ``mask``, ``source_image``: the
  files' own bytes, PNG for edit and mask, the source's original encoding, or a PNG of its pixels upright when its
  EXIF orientation rotates it, as the edit is), with the prompts, seed and metrics;
- ``instruct-pix2pix``: the columns the diffusers InstructPix2Pix trainer (``train_instruct_pix2pix.py``) reads by
  default, ``input_image``, ``edit_prompt`` (the target prompt, else the target concept) and ``edited_image``, so an
  augmented set trains with no glue code.

Only the edits made under the current settings are exported by default (``settings="current"``: the settings
fingerprints of the newest run file that names its settings); ``settings="all"`` exports every ok edit, whatever
settings made it (an output a run kept under other settings with ``--on-settings-change keep``, or records from
before fingerprints).

Outputs are read by their record URIs (files or shard members: ``outputs.OutputReader``), so every output format
exports. Writing streams: records are read batch by batch and a part is written whenever it holds ``part_bytes``
of images, so memory is about one part (and a shard or two of the job's outputs).
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .images import ImageDecodeError, upright_image_bytes
from .inputs import carried_schema_of, read_source_image
from .parquet_input import split_locator
from .layout import OutputLayout
from .outputs import OutputReader, hf_image_schema, sample_key, split_member, with_carried
from .results import iter_result_records
from .run_metadata import read_run_metadata
from .status import Status
from .storage import StorageError, StorageOptions, delete, join, list_files, redact_uri, write_bytes_atomic

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "EXPORT_SETTINGS", "INSTRUCT_PIX2PIX_SCHEMA", "ExportResult", "export_dataset"]

log = logging.getLogger(__name__)

_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
EXPORT_SCHEMA = hf_image_schema([
    ("id", pa.string(), "string"),
    ("image", _IMAGE, None),
    ("mask", _IMAGE, None),
    ("source_image", _IMAGE, None),
    ("source_prompt", pa.string(), "string"),
    ("target_prompt", pa.string(), "string"),
    ("inversion_prompt", pa.string(), "string"),
    ("seed", pa.int64(), "int64"),
    ("mask_coverage", pa.float64(), "float64"),
    ("background_psnr", pa.float64(), "float64"),
    ("background_ssim", pa.float64(), "float64"),
    ("clip_target_score", pa.float64(), "float64"),
    ("clip_source_score", pa.float64(), "float64"),
    ("clip_label", pa.float64(), "float64"),
    ("class_name", pa.string(), "string"),  # the class of the edit's row (augment.balance_by or the label column)
    ("model_id", pa.string(), "string"),
    ("width", pa.int32(), "int32"),
    ("height", pa.int32(), "int32"),
    ("run_id", pa.string(), "string"),
    ("settings_fingerprint", pa.string(), "string"),
    ("source_id", pa.string(), "string"),  # the input row the picture comes from
    ("synthetic", pa.bool_(), "bool"),  # an edit (true), or a source picture (false: --with-sources)
])
INSTRUCT_PIX2PIX_SCHEMA = hf_image_schema([
    ("input_image", _IMAGE, None),
    ("edit_prompt", pa.string(), "string"),
    ("edited_image", _IMAGE, None),
])
EXPORT_FORMATS = ("diffedit", "instruct-pix2pix", "imagefolder")
EXPORT_SETTINGS = ("current", "all")
_IMAGES = ("image", "mask", "source_image", "input_image", "edited_image")
_READ = [f.name for f in EXPORT_SCHEMA if f.name not in _IMAGES]
_READ += ["status", "image_uri", "mask_uri", "source_image_uri", "target_concept", "row_id", "carried"]


@dataclass
class ExportResult:
    parts: list[str]
    rows: int
    skipped: int  # ok records whose edit or mask (or, for instruct-pix2pix, source) could not be read (logged)
    sources_missing: int  # exported without the source picture (unreadable now)
    other_settings: int = 0  # ok records left out: made under settings other than the current ones
    sources: int = 0  # source pictures added (--with-sources), each once


def _image(reader: OutputReader, uri: str | None) -> dict | None:
    if uri is None:
        return None
    member = split_member(uri)
    name = member[1] if member else posixpath.basename(uri.rstrip("/"))
    return {"bytes": reader.read(uri), "path": name}


def _source(reader: OutputReader, uri: str | None) -> dict | None:
    """The source picture with its pixels upright, as its edit is: a reader that ignores EXIF orientation would
    otherwise see it sideways beside an upright edit. Raises StorageError when it cannot be read or decoded. A
    picture embedded in the input (a Parquet row, a WebDataset member) is read from there."""
    if uri is None:
        return None
    member = split_member(uri) or split_locator(uri)
    name = str(member[1]) if member else posixpath.basename(uri.rstrip("/"))
    if split_locator(uri) is not None:
        name = f"row-{name}"
    image = {"bytes": read_source_image(uri, reader.options), "path": name}
    try:
        data, extension = upright_image_bytes(image["bytes"])
    except ImageDecodeError as error:
        raise StorageError(f"source picture {redact_uri(uri)} is no longer a readable picture: {error}") from None
    if data is not image["bytes"]:
        image = {"bytes": data, "path": f"{posixpath.splitext(image['path'])[0]}.{extension}"}
    return image


def export_dataset(
    prefix: str,
    output: str | None = None,
    options: StorageOptions | None = None,
    *,
    part_bytes: int = 256 * 1024 * 1024,
    include_source: bool = True,
    export_format: str = "diffedit",
    settings: str = "current",
    with_sources: bool = False,
) -> ExportResult:
    """Write the ok edits under ``prefix`` as ``OUTPUT/part-NNNNN.parquet`` (default ``PREFIX/export``), or with
    ``export_format="imagefolder"`` as ``OUTPUT/<class name>/<key>.<ext>`` with a ``metadata.jsonl`` at its root.

    Parts of an earlier export to the same folder that this one does not rewrite are deleted. An ok record
    whose edit or mask is unreadable is skipped (counted); an unreadable source picture leaves
    ``source_image`` null (counted), or skips the row in ``instruct-pix2pix`` (which needs it).
    ``include_source=False`` leaves it out of a ``diffedit`` export on purpose (smaller export). ``settings``:
    ``current`` (the edits made under the newest run's settings; every edit when no run file names settings) or
    ``all``. Every row carries the input's carried columns with their types and ``datasets`` features (a
    ClassLabel keeps its names), ``source_id`` and ``synthetic``. ``with_sources`` adds each source picture that an
    exported edit was made from, once (``synthetic`` false, no mask), so the export is a whole training split.
    """
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be > 0, got {part_bytes}")
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
    if settings not in EXPORT_SETTINGS:
        raise ValueError(f"export settings must be one of {', '.join(EXPORT_SETTINGS)}, got {settings!r}")
    if with_sources and export_format == "instruct-pix2pix":
        raise ValueError("--with-sources adds source rows to a diffedit or imagefolder export; an instruct-pix2pix "
                         "row is a pair already")
    current = _current_settings(prefix, options) if settings == "current" else None
    carried, features, class_names = _carried_input(prefix, options)
    pix2pix = export_format == "instruct-pix2pix"
    schema = INSTRUCT_PIX2PIX_SCHEMA if pix2pix else with_carried(EXPORT_SCHEMA, carried, features)
    output = (output or OutputLayout(prefix).export).rstrip("/")
    if export_format == "imagefolder":
        return _export_imagefolder(prefix, output, options, current, carried, class_names, with_sources)
    before = [uri for uri in list_files(output, ".parquet", options) if posixpath.basename(uri).startswith("part-")]
    reader = OutputReader(options)
    result = ExportResult(parts=[], rows=0, skipped=0, sources_missing=0)
    rows: list[dict] = []
    size = 0

    def flush() -> None:
        nonlocal rows, size
        if not rows:
            return
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, row_group_size=256)
        uri = join(output, f"part-{len(result.parts):05d}.parquet")
        write_bytes_atomic(uri, sink.getvalue().to_pybytes(), options)
        result.parts.append(uri)
        result.rows += len(rows)
        rows, size = [], 0

    def add(row: dict) -> None:
        nonlocal size
        rows.append(row)
        size += sum(len(row[name]["bytes"]) for name in _IMAGES if row.get(name))
        if size >= part_bytes:
            flush()

    for record in _exported_records(prefix, options, current, result):
        row = _pix2pix_row(record, reader) if pix2pix else _diffedit_row(record, reader, include_source)
        if row is None:
            result.skipped += 1
            continue
        if not pix2pix:
            row.update(_carried_values(record, carried))
        if not pix2pix and include_source and row["source_image"] is None:
            result.sources_missing += 1
        add(row)
    if with_sources:
        for record in _source_records(prefix, options, current):
            row = _source_row(record, reader)
            if row is None:
                result.skipped += 1
                continue
            row.update(_carried_values(record, carried))
            result.sources += 1
            add(row)
    flush()
    for stale in sorted(set(before) - set(result.parts)):
        delete(stale, options)
    log.info("exported %d edits in %d parts to %s", result.rows, len(result.parts), redact_uri(output))
    if result.other_settings:
        log.warning("left out %d ok edits made under other settings (export --settings all includes them)",
                    result.other_settings)
    return result


def _exported_records(prefix: str, options: StorageOptions | None, current: set[str] | None,
                      result: ExportResult | None = None):
    """The ok records an export holds, streamed: made under the `current` settings (None: any)."""
    for batch in iter_result_records(prefix, options, columns=_READ):
        for record in batch:
            if record["status"] != Status.OK:
                continue
            if current is not None and record.get("settings_fingerprint") not in current:
                if result is not None:
                    result.other_settings += 1
                continue
            yield record


def _source_records(prefix: str, options: StorageOptions | None, current: set[str] | None):
    """One exported record per source picture (the first of its edits), for the export's source rows. Holds the
    ids of the sources seen: memory grows with the sources, not with their pictures."""
    seen: set[str] = set()
    for record in _exported_records(prefix, options, current):
        source_id = record.get("source_id") or record.get("row_id")
        if source_id is None or source_id in seen:
            continue
        seen.add(source_id)
        yield record


def _source_row(record: dict, reader: OutputReader) -> dict | None:
    """A source picture as an export row: its id, its picture (in ``image``), no mask, ``synthetic`` false."""
    try:
        image = _source(reader, record["source_image_uri"])
    except StorageError as error:
        log.warning("export has no source picture for %r: %s", record.get("source_id"), error)
        return None
    source_id = record.get("source_id") or record.get("row_id")
    return {"id": source_id, "image": image, "mask": None, "source_image": None,
            "source_prompt": record.get("source_prompt"), "width": record.get("width"),
            "height": record.get("height"), "source_id": source_id, "synthetic": False}


def _carried_input(prefix: str, options: StorageOptions | None):
    """The carried columns' Arrow schema, their ``datasets`` features and the class names, from the newest run file
    that describes its input (None, {}, {} when none does)."""
    for run in reversed(read_run_metadata(prefix, options)):
        described = run.get("input")
        if isinstance(described, dict):
            schema = carried_schema_of(described)
            return schema, described.get("features") or {}, described.get("class_names") or {}
    return None, {}, {}


def _carried_values(record: dict, carried: pa.Schema | None) -> dict:
    if carried is None or not len(carried):
        return {}
    values = json.loads(record["carried"]) if record.get("carried") else {}
    return {name: values.get(name) for name in carried.names}


def _export_imagefolder(prefix: str, output: str, options: StorageOptions | None, current: set[str] | None,
                        carried: pa.Schema | None, class_names: dict, with_sources: bool) -> ExportResult:
    """``OUTPUT/<class name>/<key>.<ext>`` per edit (and source, with `with_sources`) and ``OUTPUT/metadata.jsonl``
    (file_name, carried columns, prompts, source_id, synthetic): the layout of torchvision's ``ImageFolder`` and of
    Hugging Face's ``imagefolder`` loader. The class folder is the class name of the carried ``label`` (its index
    when the input names no classes; ``unlabelled`` without one). Memory: the metadata lines, not the pictures."""
    reader = OutputReader(options)
    result = ExportResult(parts=[], rows=0, skipped=0, sources_missing=0)
    names = class_names.get("label") or []
    lines: list[str] = []

    def place(record: dict, data: bytes, extension: str, synthetic: bool) -> None:
        values = _carried_values(record, carried)
        label = values.get("label")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
            folder = _safe_folder(names[label])
        else:
            folder = "unlabelled" if label is None else _safe_folder(str(label))
        key = sample_key(record["id"] if synthetic else f"{record.get('source_id') or record.get('row_id')}.source")
        file_name = f"{folder}/{key}.{extension}"
        write_bytes_atomic(join(output, file_name), data, options)
        line = {"file_name": file_name, **values, "id": record["id"] if synthetic else record.get("source_id"),
                "source_id": record.get("source_id") or record.get("row_id"), "synthetic": synthetic,
                "source_prompt": record.get("source_prompt"),
                "target_prompt": record.get("target_prompt") if synthetic else None}
        lines.append(json.dumps(line, ensure_ascii=False))
        result.rows += 1

    for record in _exported_records(prefix, options, current, result):
        try:
            data = reader.read(record["image_uri"])
        except StorageError as error:
            log.warning("export skips %r: %s", record.get("id"), error)
            result.skipped += 1
            continue
        extension = posixpath.splitext(record["image_uri"])[1].lstrip(".").lower() or "png"
        place(record, data, extension, True)
    if with_sources:
        for record in _source_records(prefix, options, current):
            try:
                image = _source(reader, record["source_image_uri"])
            except StorageError as error:
                log.warning("export has no source picture for %r: %s", record.get("source_id"), error)
                result.skipped += 1
                continue
            extension = posixpath.splitext(image["path"])[1].lstrip(".").lower() or "png"
            place(record, image["bytes"], extension, False)
            result.sources += 1
    metadata = join(output, "metadata.jsonl")
    write_bytes_atomic(metadata, ("\n".join(lines) + "\n").encode() if lines else b"", options)
    result.parts.append(metadata)
    log.info("exported %d pictures as an image folder to %s", result.rows, redact_uri(output))
    return result


def _safe_folder(name: str) -> str:
    """A class name as a folder name: path separators and leading dots replaced."""
    safe = name.replace("/", "_").replace("\\", "_").strip() or "_"
    return "_" + safe[1:] if safe.startswith(".") else safe


def _current_settings(prefix: str, options: StorageOptions | None) -> set[str] | None:
    """The settings fingerprints of the newest run file that names its settings; None when none does."""
    for run in reversed(read_run_metadata(prefix, options)):
        if isinstance(run.get("settings"), dict):
            return set(run["settings"])
    return None


def _diffedit_row(record: dict, reader: OutputReader, include_source: bool) -> dict | None:
    try:
        row = {name: record.get(name) for name in _READ if name in EXPORT_SCHEMA.names}
        row["image"] = _image(reader, record["image_uri"])
        row["mask"] = _image(reader, record["mask_uri"])
    except StorageError as error:
        log.warning("export skips %r: %s", record.get("id"), error)
        return None
    row["source_id"] = record.get("source_id") or record.get("row_id")
    row["synthetic"] = True
    row["source_image"] = None
    if include_source:
        try:
            row["source_image"] = _source(reader, record["source_image_uri"])
        except StorageError as error:
            log.warning("export of %r has no source picture: %s", record.get("id"), error)
    return row


def _pix2pix_row(record: dict, reader: OutputReader) -> dict | None:
    try:
        return {
            "input_image": _source(reader, record["source_image_uri"]),
            "edit_prompt": record.get("target_prompt") or record.get("target_concept"),
            "edited_image": _image(reader, record["image_uri"]),
        }
    except StorageError as error:
        log.warning("export skips %r: %s", record.get("id"), error)
        return None
