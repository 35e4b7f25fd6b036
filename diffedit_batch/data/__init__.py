"""The data layer: manifests, storage URIs, image decoding and result records. No torch, no Ray.

Modules: ``storage`` (URIs, filesystems, atomic writes, output keys, `StorageOptions`), ``layout`` (every path
under an output prefix), ``status`` (record statuses and error classes), ``manifest`` (input schema, rows into
edit requests), ``images`` (decode/encode), ``metrics`` (background PSNR/SSIM), ``records`` (result records and their
files), ``worklist`` (a run's plan: resume and duplicates, per bucket of row ids), ``compaction`` (few large record
files, one record per edit), ``results`` (reading records back), ``run_metadata`` (run files), ``export`` (the
training export).
"""

from .images import (
    ImageDecodeError,
    decode_image,
    encode_png,
    fit_to_resolution,
    mask_coverage,
    mask_to_png,
    restore_size,
    upsample_mask,
)
from .layout import OutputLayout
from .manifest import (
    MANIFEST_COLUMNS,
    EditRequest,
    ManifestError,
    check_manifest_schema,
    expand_edits,
    inspect_manifest,
    manifest_base_dir,
    manifest_files,
    needs_caption,
    read_manifest_schema,
    validate_request,
)
from .records import (
    RECORD_SCHEMA,
    RESULT_SCHEMA,
    RecordFile,
    extend_result_schema,
    list_record_files,
    read_record_file,
    record_files,
    records_to_table,
    write_record_part,
)
from .status import ErrorClass, Status
from .storage import StorageError, StorageOptions, output_key, read_bytes, resolve, write_bytes_atomic

__all__ = [
    "MANIFEST_COLUMNS",
    "RECORD_SCHEMA",
    "RESULT_SCHEMA",
    "EditRequest",
    "ErrorClass",
    "ImageDecodeError",
    "ManifestError",
    "OutputLayout",
    "RecordFile",
    "Status",
    "StorageError",
    "StorageOptions",
    "check_manifest_schema",
    "decode_image",
    "encode_png",
    "expand_edits",
    "extend_result_schema",
    "fit_to_resolution",
    "inspect_manifest",
    "list_record_files",
    "manifest_base_dir",
    "manifest_files",
    "mask_coverage",
    "mask_to_png",
    "needs_caption",
    "output_key",
    "read_bytes",
    "read_manifest_schema",
    "read_record_file",
    "record_files",
    "records_to_table",
    "resolve",
    "restore_size",
    "upsample_mask",
    "validate_request",
    "write_bytes_atomic",
    "write_record_part",
]
