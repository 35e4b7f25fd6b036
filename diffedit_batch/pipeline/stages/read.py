"""Read: stream manifest files as blocks of rows, one Parquet record batch at a time."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.data.storage import StorageOptions, resolve


def read_manifest_rows(batch: pa.Table, *, options: StorageOptions, columns: list[str], rows_per_block: int = 1024):
    """Yield the rows of each manifest file named in `batch`'s `file` column, `rows_per_block` at a time."""
    for uri in batch.column("file").to_pylist():
        filesystem, path = resolve(uri, options)
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [name for name in columns if name in parquet.schema_arrow.names]
            for record_batch in parquet.iter_batches(batch_size=rows_per_block, columns=present):
                yield pa.Table.from_batches([record_batch])
