"""Read: stream Parquet files as blocks of rows, one record batch at a time (CPU tasks).

Two inputs are read this way: the manifest, by the run's plan (each row numbered by its place in the manifest),
and the work list that the plan wrote, by the edit pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.config import Config
from diffedit_batch.data.manifest import MANIFEST_COLUMNS, manifest_file_error, resolve_images
from diffedit_batch.data.storage import StorageOptions, resolve
from diffedit_batch.data.worklist import REQUEST_SCHEMA, WORK_ROW_GROUP

from ..rows import conform_work_rows
from .spec import Stage

ROWS_PER_BLOCK = 1024


def read_manifest_rows(batch: pa.Table, *, options: StorageOptions, rows_per_block: int = ROWS_PER_BLOCK,
                       extra_columns: tuple[str, ...] = (), class_column: str | None = None):
    """Yield the manifest columns of each file named in `batch` (`file`, `first_row`), `rows_per_block` at a
    time, each row with its `row_index`: its place in the manifest (files in sorted order, then row order), and
    its relative `image` resolved against its file's folder. `extra_columns`: other columns to read too (those
    that prompt templates, regions and augment name). With `class_column` each row also gets its `class_rank`: its
    place among the rows of its class, counted from the file's offsets in `batch`'s `class_offsets` (JSON: class
    key -> rows of that class in the files before it, `planning.count_classes`). Raises ManifestError naming a
    file that cannot be read."""
    from diffedit_batch.data.augment import class_key

    columns = list(dict.fromkeys([*(column.name for column in MANIFEST_COLUMNS), *extra_columns]))
    offsets = (batch.column("class_offsets").to_pylist() if "class_offsets" in batch.column_names
               else [None] * batch.num_rows)
    for uri, first_row, file_offsets in zip(batch.column("file").to_pylist(), batch.column("first_row").to_pylist(),
                                            offsets):
        filesystem, path = resolve(uri, options)
        seen = json.loads(file_offsets) if file_offsets else {}
        try:
            with filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = [name for name in columns if name in parquet.schema_arrow.names]
                for record_batch in parquet.iter_batches(batch_size=rows_per_block, columns=present):
                    table = resolve_images(pa.Table.from_batches([record_batch]), uri)
                    row_index = pa.array(range(first_row, first_row + table.num_rows), pa.int64())
                    first_row += table.num_rows
                    table = table.append_column("row_index", row_index)
                    if class_column is not None and class_column in table.column_names:
                        ranks = []
                        for value in table.column(class_column).to_pylist():
                            key = class_key(value)
                            ranks.append(seen.get(key, 0))
                            seen[key] = seen.get(key, 0) + 1
                        table = table.append_column("class_rank", pa.array(ranks, pa.int64()))
                    yield table
        except (OSError, pa.ArrowException) as error:
            # The footers were read before the run; a page behind them can still be corrupt. Bad input, named.
            raise manifest_file_error(uri, error) from None


def read_work_rows(batch: pa.Table, *, options: StorageOptions) -> Iterator[pa.Table]:
    """Yield the work rows of each slice of a work-list file named in `batch` (`file`, `start`, `count`): only
    the row groups that hold the slice are read."""
    for uri, start, count in zip(*(batch.column(name).to_pylist() for name in ("file", "start", "count"))):
        filesystem, path = resolve(uri, options)
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            groups, first, offset = [], 0, 0
            for index in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(index).num_rows
                if offset + rows > start and offset < start + count:
                    if not groups:
                        first = offset
                    groups.append(index)
                offset += rows
            table = parquet.read_row_groups(groups, columns=REQUEST_SCHEMA.names)
        yield conform_work_rows(table.slice(start - first, count))


def work_slices(files: list[tuple[str, int]], batch_size: int, actors: int = 1, max_rows: int = WORK_ROW_GROUP,
                max_slices: int = 10_000) -> list[dict]:
    """The work list cut into slices (`file`, `start`, `count`), each read by one task into one block.

    A block is what one downstream task or actor call takes. Slices are whole batches, small enough that every
    edit actor gets several (a small job spreads over the pool: four slices an actor), but no smaller than needed:
    every slice costs a task, and past a few per actor they only add overhead. At most `max_rows` rows a slice,
    unless that would make more than `max_slices` slices (the driver's list stays small however large the job).
    """
    total = sum(rows for _, rows in files)
    per_slice = min(max_rows, -(-total // (4 * max(1, actors))))
    per_slice = max(batch_size, per_slice, -(-total // max_slices))
    per_slice = -(-per_slice // batch_size) * batch_size
    return [
        {"file": uri, "start": start, "count": min(per_slice, rows - start)}
        for uri, rows in files
        for start in range(0, rows, per_slice)
    ]


def read_work_stage(config: Config) -> Stage:
    """The edit pass's source: slices of the run's work list (`work_slices`), one block each."""
    return Stage(
        name="read work list", run=read_work_rows, reads=(), adds=tuple(REQUEST_SCHEMA.names), cpus=0.25,
        batch_size=1, kwargs={"options": config.storage},
    )
