"""Read: stream the work list that the plan wrote as blocks of rows, one record batch at a time (CPU tasks), and an
input that embeds its pictures by spans. The plan reads the input itself with `data.inputs.read_input_rows`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from diffedit_batch.config import Config
from diffedit_batch.data.storage import StorageOptions, resolve
from diffedit_batch.data.worklist import REQUEST_SCHEMA, WORK_ROW_GROUP

from ..rows import conform_work_rows
from .spec import Stage



def read_work_rows(batch: pa.Table, *, options: StorageOptions) -> Iterator[pa.Table]:
    """Yield the work rows of each slice (`file`, `start`, `count`) of a work-list file that `batch` names: its
    `slices` column, each row a read task's list of them (`work_tasks`). Only the row groups that hold a slice are
    read."""
    pieces = [piece for task in batch.column("slices").to_pylist() for piece in task]
    for uri, start, count in ((piece["file"], piece["start"], piece["count"]) for piece in pieces):
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
    """The work list cut into slices (`file`, `start`, `count`) of at most `slice_rows` rows, whole batches."""
    per_slice = slice_rows(sum(rows for _, rows in files), batch_size, actors, max_rows, max_slices)
    return [
        {"file": uri, "start": start, "count": min(per_slice, rows - start)}
        for uri, rows in files
        for start in range(0, rows, per_slice)
    ]


def slice_rows(total: int, batch_size: int, actors: int = 1, max_rows: int = WORK_ROW_GROUP,
               max_slices: int = 10_000) -> int:
    """The rows of a read task of a work list of `total` rows.

    A task's rows make one block, what one downstream task or actor call takes. They are whole batches, small enough
    that every edit actor gets several (a small job spreads over the pool: four tasks an actor), but no smaller than
    needed: every task costs, and past a few per actor they only add overhead. At most `max_rows` rows, unless that
    would make more than `max_slices` tasks (the driver's list stays small however large the job).
    """
    per_slice = min(max_rows, -(-total // (4 * max(1, actors))))
    per_slice = max(batch_size, per_slice, -(-total // max_slices))
    return -(-per_slice // batch_size) * batch_size


def work_tasks(files: list[tuple[str, int]], batch_size: int, actors: int = 1, max_rows: int = WORK_ROW_GROUP,
               max_slices: int = 10_000) -> list[list[dict]]:
    """The work list's slices (`work_slices`) grouped into read tasks of at most `slice_rows` rows each: the slices
    of small files share a task. A re-run of 10^7 done rows and 1,000 new ones has a work file in each of its 400
    buckets, of a few rows each: read a task per file, each task paid a task's cost for milliseconds of work (121
    files took 16 s on two cores); grouped, they are four tasks."""
    per_task = slice_rows(sum(rows for _, rows in files), batch_size, actors, max_rows, max_slices)
    tasks: list[list[dict]] = []
    rows = 0
    for piece in work_slices(files, batch_size, actors, max_rows, max_slices):
        if not tasks or rows + piece["count"] > per_task:
            tasks.append([])
            rows = 0
        tasks[-1].append(piece)
        rows += piece["count"]
    return tasks


def read_work_stage(config: Config) -> Stage:
    """The edit pass's source: the run's work list, a read task's slices a row (`work_tasks`)."""
    return Stage(
        name="read work list", run=read_work_rows, reads=(), adds=tuple(REQUEST_SCHEMA.names), cpus=0.25,
        batch_size=1, kwargs={"options": config.storage},
    )


# --- inputs that embed their pictures ---------------------------------------------------------------------------
#
# Why the edit pass of an embedded input starts from the input and not from the work list: the plan decides which
# rows are to do by shuffling rows by id, and a picture in a shuffled row would travel through the shuffle (10 GB
# for 10^5 pictures of 100 KB, each copied to disk and back). So the plan never reads the pictures (a row names its
# picture by a locator), and the edit pass reads them again where they are: one task per span of the input (a few
# row groups of one Parquet file, or one shard), which first reads the work rows of its span (their `row_index`
# range: every bucket's work file is sorted by it, so Parquet statistics skip the rest), reads the pictures of those
# rows only (nothing at all for a span with nothing to do, as on a re-run), and hands on blocks of at most
# EMBEDDED_BLOCK_BYTES of pictures. A task holds one row group (or one picture of a shard) and one block: every
# process's memory is bounded whatever the input's size, and no picture is read twice or shuffled.

EMBEDDED_BLOCK_BYTES = 16 * 2**20
# Rows of a Parquet input one span reads at most (whole row groups: a larger group is a span alone).
EMBEDDED_SPAN_ROWS = 4096


def embedded_spans(manifest, options: StorageOptions, threads: int = 16) -> list[dict]:
    """The spans an embedded input's edit pass reads (`file`, `first_row`, `groups`, `low`, `high`: rows
    [low, high) by `row_index`): runs of whole row groups of a Parquet file up to EMBEDDED_SPAN_ROWS rows, or a
    shard each. Reads the Parquet footers again (in threads), not the rows."""
    from concurrent.futures import ThreadPoolExecutor

    from diffedit_batch.data.inputs import SHARD_ROW_BITS

    files = [file for file in manifest.files if file.rows]
    if manifest.spec.format == "webdataset":
        return [{"file": f.uri, "first_row": f.first_row, "groups": [], "low": f.first_row,
                 "high": f.first_row + (1 << SHARD_ROW_BITS)} for f in files]

    def group_rows(uri: str) -> list[int]:
        filesystem, path = resolve(uri, options)
        metadata = pq.read_metadata(path, filesystem=filesystem)
        return [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        groups_of = list(pool.map(lambda file: group_rows(file.uri), files))
    spans = []
    for file, rows in zip(files, groups_of):
        start, groups, count = file.first_row, [], 0
        for index, n in enumerate(rows):
            if groups and count + n > EMBEDDED_SPAN_ROWS:
                spans.append({"file": file.uri, "first_row": file.first_row, "groups": groups, "low": start,
                              "high": start + count})
                start, groups, count = start + count, [], 0
            groups.append(index)
            count += n
        if groups:
            spans.append({"file": file.uri, "first_row": file.first_row, "groups": groups, "low": start,
                          "high": start + count})
    return spans


def _work_between(work_files: list[str], low: int, high: int, options: StorageOptions) -> pa.Table:
    """The work rows whose `row_index` is in [low, high), from every work file (sorted by row_index within each:
    the statistics of their row groups skip the rest), in (row_index, target_index) order."""
    parts = []
    for uri in work_files:
        filesystem, path = resolve(uri, options)
        table = pq.read_table(path, filesystem=filesystem, columns=REQUEST_SCHEMA.names,
                              filters=[("row_index", ">=", low), ("row_index", "<", high)])
        if table.num_rows:
            parts.append(table)
    if not parts:
        return REQUEST_SCHEMA.empty_table()
    return pa.concat_tables(parts).sort_by([("row_index", "ascending"), ("target_index", "ascending")])


def read_embedded_work(batch: pa.Table, *, options: StorageOptions, work_files: list[str], image: str,
                       block_bytes: int = EMBEDDED_BLOCK_BYTES) -> Iterator[pa.Table]:
    """The work rows of each span in `batch` (`embedded_spans`) with their pictures' bytes (`source_image_bytes`):
    read from the input's row groups or shard, only for the rows to do. A row whose picture is not embedded (a
    struct's path) keeps its URI for the fetch stage."""
    from diffedit_batch.data.parquet_input import read_embedded_images, split_locator
    from diffedit_batch.data.webdataset_input import read_shard_images

    for span in batch.to_pylist():
        work = _work_between(work_files, span["low"], span["high"], options)
        if not work.num_rows:
            continue
        rows = work.to_pylist()
        by_key: dict = {}
        for row in rows:
            uri = row["source_image_uri"] or ""
            if image == "member":
                key = uri.partition(".tar#")[2] if uri.startswith(span["file"]) else None
            else:
                located = split_locator(uri)
                key = located[1] if located and located[0] == span["file"] else None
            if key is not None:
                by_key.setdefault(key, []).append(row)
        if image == "member":
            pictures = read_shard_images(span["file"], set(by_key), options)
        else:
            pictures = read_embedded_images(span["file"], span["groups"], set(by_key), options)
        block, size, sent = [], 0, set()
        for key, data in pictures:
            for row in by_key.pop(key, ()):
                # a copy: the span's rows must not keep the pictures once their block has gone
                block.append({**row, "source_image_bytes": data})
                sent.add(id(row))
                size += len(data or b"")
            del data
            if size >= block_bytes:
                yield conform_work_rows(pa.Table.from_pylist(block, schema=_EMBEDDED_ROW))
                block, size = [], 0
        block += [row for row in rows if id(row) not in sent]  # by URI (or missing: the fetch stage says so)
        if block:
            yield conform_work_rows(pa.Table.from_pylist(block, schema=_EMBEDDED_ROW))
        del block, rows, work
        # Arrow keeps freed pages for reuse: a long-lived worker would otherwise hold its largest span's worth.
        pa.default_memory_pool().release_unused()


_EMBEDDED_ROW = pa.schema([*REQUEST_SCHEMA, pa.field("source_image_bytes", pa.binary())])


def read_embedded_stage(config: Config, work_files: list[str], image: str) -> Stage:
    """The edit pass's source for an input that embeds its pictures: spans of the input (`embedded_spans`)."""
    return Stage(
        name="read input pictures", run=read_embedded_work, reads=(),
        adds=(*REQUEST_SCHEMA.names, "source_image_bytes"), cpus=0.25, batch_size=1,
        kwargs={"options": config.storage, "work_files": work_files, "image": image},
    )
