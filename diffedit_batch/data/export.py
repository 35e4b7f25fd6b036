"""Export the successful edits as a Parquet image dataset for training pipelines.

Two layouts, both Parquet with Hugging Face ``datasets`` feature metadata (the ``huggingface`` key), so

    datasets.load_dataset("parquet", data_files="OUT/part-*.parquet")

decodes the image columns as PIL images; any Parquet reader sees ``{bytes, path}`` structs:

- ``diffedit`` (default): the edit, its mask and the source picture (``image``, ``mask``, ``source_image``: the
  files' own bytes, PNG for edit and mask, the source's original encoding), with the prompts, seed and metrics;
- ``instruct-pix2pix``: the columns the diffusers InstructPix2Pix trainer (``train_instruct_pix2pix.py``) reads by
  default, ``input_image``, ``edit_prompt`` (the target prompt, else the target concept) and ``edited_image``, so an
  augmented set trains with no glue code.

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

from .layout import OutputLayout
from .outputs import OutputReader, hf_image_schema, split_member
from .results import iter_result_records
from .status import Status
from .storage import StorageError, StorageOptions, delete, join, list_files, redact_uri, write_bytes_atomic

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "INSTRUCT_PIX2PIX_SCHEMA", "ExportResult", "export_dataset"]

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
    ("model_id", pa.string(), "string"),
    ("width", pa.int32(), "int32"),
    ("height", pa.int32(), "int32"),
    ("run_id", pa.string(), "string"),
])
INSTRUCT_PIX2PIX_SCHEMA = hf_image_schema([
    ("input_image", _IMAGE, None),
    ("edit_prompt", pa.string(), "string"),
    ("edited_image", _IMAGE, None),
])
EXPORT_FORMATS = ("diffedit", "instruct-pix2pix")
_IMAGES = ("image", "mask", "source_image", "input_image", "edited_image")
_READ = [f.name for f in EXPORT_SCHEMA if f.name not in _IMAGES]
_READ += ["status", "image_uri", "mask_uri", "source_image_uri", "target_concept"]


@dataclass
class ExportResult:
    parts: list[str]
    rows: int
    skipped: int  # ok records whose edit or mask (or, for instruct-pix2pix, source) could not be read (logged)
    sources_missing: int  # exported without the source picture (unreadable now)


def _image(reader: OutputReader, uri: str | None) -> dict | None:
    if uri is None:
        return None
    member = split_member(uri)
    name = member[1] if member else posixpath.basename(uri.rstrip("/"))
    return {"bytes": reader.read(uri), "path": name}


def export_dataset(
    prefix: str,
    output: str | None = None,
    options: StorageOptions | None = None,
    *,
    part_bytes: int = 256 * 1024 * 1024,
    include_source: bool = True,
    export_format: str = "diffedit",
) -> ExportResult:
    """Write the ok edits under ``prefix`` as ``OUTPUT/part-NNNNN.parquet`` (default ``PREFIX/export``).

    Parts of an earlier export to the same folder that this one does not rewrite are deleted. An ok record
    whose edit or mask is unreadable is skipped (counted); an unreadable source picture leaves
    ``source_image`` null (counted), or skips the row in ``instruct-pix2pix`` (which needs it).
    ``include_source=False`` leaves it out of a ``diffedit`` export on purpose (smaller export).
    """
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be > 0, got {part_bytes}")
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
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
    return result


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
            row["source_image"] = _image(reader, record["source_image_uri"])
        except StorageError as error:
            log.warning("export of %r has no source picture: %s", record.get("id"), error)
    return row


def _pix2pix_row(record: dict, reader: OutputReader) -> dict | None:
    try:
        return {
            "input_image": _image(reader, record["source_image_uri"]),
            "edit_prompt": record.get("target_prompt") or record.get("target_concept"),
            "edited_image": _image(reader, record["image_uri"]),
        }
    except StorageError as error:
        log.warning("export skips %r: %s", record.get("id"), error)
        return None
