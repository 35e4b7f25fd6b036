"""Export the successful edits as a Parquet image dataset for training pipelines.

Each row holds the edit, its mask and the source picture as image structs (``{bytes, path}``: the files'
own bytes, PNG for edit and mask, the source's original encoding), with the prompts, seed and metrics.
The Parquet schema carries Hugging Face ``datasets`` feature metadata (the ``huggingface`` key), so

    datasets.load_dataset("parquet", data_files="OUT/part-*.parquet")

decodes ``image``, ``mask`` and ``source_image`` as PIL images; any Parquet reader sees plain structs.
Writing streams: records are read batch by batch and a part is written whenever it holds ``part_bytes``
of images, so memory is about one part.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .layout import OutputLayout
from .results import iter_result_records
from .status import Status
from .storage import StorageError, StorageOptions, delete, join, list_files, read_bytes, redact_uri, write_bytes_atomic

__all__ = ["EXPORT_SCHEMA", "ExportResult", "export_dataset"]

log = logging.getLogger(__name__)

_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
_COLUMNS = [
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
]
_FEATURES = {
    name: {"_type": "Image"} if dtype is None else {"dtype": dtype, "_type": "Value"} for name, _, dtype in _COLUMNS
}
EXPORT_SCHEMA = pa.schema(
    [pa.field(name, arrow_type) for name, arrow_type, _ in _COLUMNS],
    metadata={"huggingface": json.dumps({"info": {"features": _FEATURES}})},
)
_READ = [name for name, _, _ in _COLUMNS if name not in ("image", "mask", "source_image")]
_READ += ["status", "image_uri", "mask_uri", "source_image_uri"]


@dataclass
class ExportResult:
    parts: list[str]
    rows: int
    skipped: int  # ok records whose edit or mask could not be read (logged)
    sources_missing: int  # exported without the source picture (unreadable now)


def _image(uri: str | None, options: StorageOptions | None) -> dict | None:
    if uri is None:
        return None
    return {"bytes": read_bytes(uri, options), "path": posixpath.basename(uri.rstrip("/"))}


def export_dataset(
    prefix: str,
    output: str | None = None,
    options: StorageOptions | None = None,
    *,
    part_bytes: int = 256 * 1024 * 1024,
    include_source: bool = True,
) -> ExportResult:
    """Write the ok edits under ``prefix`` as ``OUTPUT/part-NNNNN.parquet`` (default ``PREFIX/export``).

    Parts of an earlier export to the same folder that this one does not rewrite are deleted. An ok record
    whose edit or mask is unreadable is skipped (counted); an unreadable source picture leaves
    ``source_image`` null (counted). ``include_source=False`` leaves it out on purpose (smaller export).
    """
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be > 0, got {part_bytes}")
    output = (output or OutputLayout(prefix).export).rstrip("/")
    before = [uri for uri in list_files(output, ".parquet", options) if posixpath.basename(uri).startswith("part-")]
    result = ExportResult(parts=[], rows=0, skipped=0, sources_missing=0)
    rows: list[dict] = []
    size = 0

    def flush() -> None:
        nonlocal rows, size
        if not rows:
            return
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA), sink, row_group_size=256)
        uri = join(output, f"part-{len(result.parts):05d}.parquet")
        write_bytes_atomic(uri, sink.getvalue().to_pybytes(), options)
        result.parts.append(uri)
        result.rows += len(rows)
        rows, size = [], 0

    for batch in iter_result_records(prefix, options, columns=_READ):
        for record in batch:
            if record["status"] != Status.OK:
                continue
            try:
                row = {name: record.get(name) for name in _READ}
                row["image"] = _image(record["image_uri"], options)
                row["mask"] = _image(record["mask_uri"], options)
            except StorageError as error:
                result.skipped += 1
                log.warning("export skips %r: %s", record.get("id"), error)
                continue
            row["source_image"] = None
            if include_source:
                try:
                    row["source_image"] = _image(record["source_image_uri"], options)
                except StorageError as error:
                    result.sources_missing += 1
                    log.warning("export of %r has no source picture: %s", record.get("id"), error)
            rows.append(row)
            size += sum(len(row[name]["bytes"]) for name in ("image", "mask", "source_image") if row[name])
            if size >= part_bytes:
                flush()
    flush()
    for stale in sorted(set(before) - set(result.parts)):
        delete(stale, options)
    log.info("exported %d edits in %d parts to %s", result.rows, len(result.parts), redact_uri(output))
    return result
