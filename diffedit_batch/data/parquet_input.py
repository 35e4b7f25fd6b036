"""Parquet inputs: rows whose `image` is a URI, the picture's bytes, or a ``datasets`` image struct ``{bytes, path}``.

The plan reads a file's rows without their pictures: a binary or struct image column is read only for the rows
whose bytes are null (a row group whose statistics say none are is not read at all), so a manifest of embedded
pictures costs the plan its small columns only. A row whose picture is embedded names it by a locator,
``<file URI>#row=<k>`` (its place in its file); the edit pass reads the bytes again by row group
(`read_embedded_images`), never through the plan's shuffle.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .storage import StorageError, StorageOptions, parent_uri, resolve, resolve_relative

__all__ = ["embedded_locator", "image_values", "read_embedded_images", "split_locator"]

_LOCATOR = re.compile(r"^(.*)#row=(\d+)$", re.DOTALL)


def embedded_locator(file_uri: str, row: int) -> str:
    """The locator of the picture embedded in row `row` (0-based, in its file) of the Parquet file `file_uri`."""
    return f"{file_uri}#row={row}"


def split_locator(uri: str) -> tuple[str, int] | None:
    """(file URI, row) of an embedded picture's locator; None for any other URI."""
    match = _LOCATOR.match(uri)
    return (match.group(1), int(match.group(2))) if match else None


def _bytes_null_free(parquet: pq.ParquetFile, group: int, leaf: str) -> bool:
    """Whether row group `group`'s statistics say that column `leaf` has no null: its pictures are all embedded."""
    metadata = parquet.metadata.row_group(group)
    for index in range(metadata.num_columns):
        column = metadata.column(index)
        if column.path_in_schema == leaf:
            stats = column.statistics
            return stats is not None and stats.has_null_count and stats.null_count == 0
    return False


def image_values(parquet: pq.ParquetFile, group: int, kind: str, file_uri: str, first_in_file: int
                 ) -> Iterator[tuple[str | None, str | None]]:
    """The `image` value of each row of row group `group`, in order, as (image URI or locator, problem): an
    embedded picture's locator, a struct's resolved `path` when its bytes are null, None and the reason when it has
    neither. Reads the bytes column only where statistics cannot say they are all present, 64 rows at a time."""
    base_dir = parent_uri(file_uri)
    leaf = "image" if kind == "binary" else "image.bytes"
    has_path = kind == "struct" and "path" in [f.name for f in parquet.schema_arrow.field("image").type]
    row = first_in_file
    if _bytes_null_free(parquet, group, leaf):
        for k in range(parquet.metadata.row_group(group).num_rows):
            yield embedded_locator(file_uri, row + k), None
        return
    # Some pictures are not embedded: read the column, a small batch at a time (pictures are large).
    for batch in parquet.iter_batches(batch_size=64, row_groups=[group], columns=["image"]):
        column = batch.column(0)
        valid = column.is_valid().to_pylist()
        if kind == "binary":
            present, paths = valid, [None] * len(valid)
        else:
            names = [f.name for f in column.type]
            present = pc.is_valid(column.field("bytes")).to_pylist() if "bytes" in names else [False] * len(valid)
            present = [p and v for p, v in zip(present, valid)]
            paths = column.field("path").to_pylist() if has_path else [None] * len(valid)
            paths = [p if v else None for p, v in zip(paths, valid)]
        for embedded, path in zip(present, paths):
            if embedded:
                yield embedded_locator(file_uri, row), None
            elif isinstance(path, str) and path.strip():
                try:
                    yield resolve_relative(path.strip(), base_dir), None
                except StorageError:
                    yield path.strip(), None
            else:
                yield None, ("image has no picture: its bytes and its path are both null" if kind == "struct"
                             else "image is null")
            row += 1


def read_embedded_images(file_uri: str, groups: list[int], wanted: set[int], options: StorageOptions
                         ) -> Iterator[tuple[int, bytes | None]]:
    """(row in file, bytes) of each row of `wanted` in row groups `groups` of a Parquet file, one row group in
    memory at a time, only the `image` column read. A row whose bytes are null gives None."""
    filesystem, path = resolve(file_uri, options)
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        starts, offset = [], 0
        for index in range(parquet.num_row_groups):
            starts.append(offset)
            offset += parquet.metadata.row_group(index).num_rows
        kind = "binary" if not pa.types.is_struct(parquet.schema_arrow.field("image").type) else "struct"
        for group in groups:
            first, rows = starts[group], parquet.metadata.row_group(group).num_rows
            inside = sorted(row for row in wanted if first <= row < first + rows)
            if not inside:
                continue
            column = parquet.read_row_group(group, columns=["image"]).column(0)
            for row in inside:
                value = column[row - first].as_py()
                if kind == "struct":
                    value = value.get("bytes") if isinstance(value, dict) else None
                yield row, value
            del column


# The row group read last by `read_embedded_image`: the export and the report read a file's pictures in row order,
# so the next picture is most often in the same group. One group per process.
_last_group: tuple[tuple[str, int], pa.ChunkedArray, int] | None = None
_last_lock = threading.Lock()


def read_embedded_image(file_uri: str, row: int, options: StorageOptions) -> bytes:
    """The bytes of one embedded picture (export, report and shard writers: a picture at a time). Reads its row
    group's image column, kept for the next call; raises StorageError when the file or row cannot be read or holds
    no bytes."""
    global _last_group
    filesystem, path = resolve(file_uri, options)
    try:
        with _last_lock:
            cached = _last_group
            if cached is None or cached[0][0] != file_uri or not cached[2] <= row < cached[2] + len(cached[1]):
                with filesystem.open_input_file(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    offset = 0
                    for group in range(parquet.num_row_groups):
                        rows = parquet.metadata.row_group(group).num_rows
                        if offset <= row < offset + rows:
                            break
                        offset += rows
                    else:
                        raise StorageError(f"{file_uri} has no row {row}")
                    column = parquet.read_row_group(group, columns=["image"]).column(0)
                cached = _last_group = ((file_uri, group), column, offset)
        value = cached[1][row - cached[2]].as_py()
    except (OSError, pa.ArrowException) as error:
        raise StorageError(f"cannot read the picture of row {row} of {file_uri}: {error}") from error
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        raise StorageError(f"row {row} of {file_uri} holds no picture bytes")
    return data
