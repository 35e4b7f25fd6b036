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

import logging
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .images import ImageDecodeError, upright_image_bytes
from .layout import OutputLayout
from .outputs import OutputReader, hf_image_schema, split_member
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
])
INSTRUCT_PIX2PIX_SCHEMA = hf_image_schema([
    ("input_image", _IMAGE, None),
    ("edit_prompt", pa.string(), "string"),
    ("edited_image", _IMAGE, None),
])
EXPORT_FORMATS = ("diffedit", "instruct-pix2pix")
EXPORT_SETTINGS = ("current", "all")
_IMAGES = ("image", "mask", "source_image", "input_image", "edited_image")
_READ = [f.name for f in EXPORT_SCHEMA if f.name not in _IMAGES]
_READ += ["status", "image_uri", "mask_uri", "source_image_uri", "target_concept"]


@dataclass
class ExportResult:
    parts: list[str]
    rows: int
    skipped: int  # ok records whose edit or mask (or, for instruct-pix2pix, source) could not be read (logged)
    sources_missing: int  # exported without the source picture (unreadable now)
    other_settings: int = 0  # ok records left out: made under settings other than the current ones


def _image(reader: OutputReader, uri: str | None) -> dict | None:
    if uri is None:
        return None
    member = split_member(uri)
    name = member[1] if member else posixpath.basename(uri.rstrip("/"))
    return {"bytes": reader.read(uri), "path": name}


def _source(reader: OutputReader, uri: str | None) -> dict | None:
    """The source picture with its pixels upright, as its edit is: a reader that ignores EXIF orientation would
    otherwise see it sideways beside an upright edit. Raises StorageError when it cannot be read or decoded."""
    image = _image(reader, uri)
    if image is None:
        return None
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
) -> ExportResult:
    """Write the ok edits under ``prefix`` as ``OUTPUT/part-NNNNN.parquet`` (default ``PREFIX/export``).

    Parts of an earlier export to the same folder that this one does not rewrite are deleted. An ok record
    whose edit or mask is unreadable is skipped (counted); an unreadable source picture leaves
    ``source_image`` null (counted), or skips the row in ``instruct-pix2pix`` (which needs it).
    ``include_source=False`` leaves it out of a ``diffedit`` export on purpose (smaller export). ``settings``:
    ``current`` (the edits made under the newest run's settings; every edit when no run file names settings) or
    ``all``.
    """
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be > 0, got {part_bytes}")
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
    if settings not in EXPORT_SETTINGS:
        raise ValueError(f"export settings must be one of {', '.join(EXPORT_SETTINGS)}, got {settings!r}")
    current = _current_settings(prefix, options) if settings == "current" else None
    pix2pix = export_format == "instruct-pix2pix"
    schema = INSTRUCT_PIX2PIX_SCHEMA if pix2pix else EXPORT_SCHEMA
    output = (output or OutputLayout(prefix).export).rstrip("/")
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

    for batch in iter_result_records(prefix, options, columns=_READ):
        for record in batch:
            if record["status"] != Status.OK:
                continue
            if current is not None and record.get("settings_fingerprint") not in current:
                result.other_settings += 1
                continue
            row = _pix2pix_row(record, reader) if pix2pix else _diffedit_row(record, reader, include_source)
            if row is None:
                result.skipped += 1
                continue
            if not pix2pix and include_source and row["source_image"] is None:
                result.sources_missing += 1
            rows.append(row)
            size += sum(len(row[name]["bytes"]) for name in _IMAGES if row.get(name))
            if size >= part_bytes:
                flush()
    flush()
    for stale in sorted(set(before) - set(result.parts)):
        delete(stale, options)
    log.info("exported %d edits in %d parts to %s", result.rows, len(result.parts), redact_uri(output))
    if result.other_settings:
        log.warning("left out %d ok edits made under other settings (export --settings all includes them)",
                    result.other_settings)
    return result


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
