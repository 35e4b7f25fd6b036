"""The data layer: manifests, storage URIs, image decoding and result records. No torch, no Ray.

Modules: ``storage`` (URIs, filesystems, atomic writes, output keys), ``manifest`` (input schema,
rows into edit requests), ``images`` (decode/encode), ``records`` (result records and resume).
"""

from .images import (
    ImageDecodeError,
    decode_image,
    encode_png,
    fit_to_resolution,
    mask_coverage,
    mask_to_png,
    restore_size,
)
from .manifest import (
    MANIFEST_COLUMNS,
    EditRequest,
    ManifestError,
    check_manifest_schema,
    derive_seed,
    expand_edits,
    manifest_base_dir,
    manifest_files,
    read_manifest_schema,
    validate_request,
)
from .records import (
    RESULT_SCHEMA,
    RecordIndex,
    drop_superseded,
    extend_result_schema,
    image_output_uri,
    mask_output_uri,
    read_record_index,
    records_to_table,
    write_record_part,
)
from .storage import StorageError, StorageOptions, output_key, read_bytes, resolve, write_bytes_atomic

__all__ = [
    "MANIFEST_COLUMNS",
    "RESULT_SCHEMA",
    "EditRequest",
    "ImageDecodeError",
    "ManifestError",
    "RecordIndex",
    "StorageError",
    "StorageOptions",
    "check_manifest_schema",
    "decode_image",
    "derive_seed",
    "drop_superseded",
    "encode_png",
    "expand_edits",
    "extend_result_schema",
    "fit_to_resolution",
    "image_output_uri",
    "manifest_base_dir",
    "manifest_files",
    "mask_coverage",
    "mask_output_uri",
    "mask_to_png",
    "output_key",
    "read_bytes",
    "read_manifest_schema",
    "read_record_index",
    "records_to_table",
    "resolve",
    "restore_size",
    "validate_request",
    "write_bytes_atomic",
    "write_record_part",
]
