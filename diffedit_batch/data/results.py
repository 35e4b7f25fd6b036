"""Reading the result manifest back, streaming: the records of a finished (or resumed) job, one batch at a time.

Readers (the report, the training export) see one record per edit even when an interrupted run left a
superseded record behind: a record is kept when its part is the one ``read_record_index`` picks for its id
(an ``ok`` record wins). Parts written before a column existed read as nulls in that column. Memory is one
batch of records plus the id index (an id and a part name per edit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .records import read_record_index, record_files
from .storage import StorageError, StorageOptions, redact_uri, resolve

__all__ = ["iter_result_records"]


def iter_result_records(
    prefix: str,
    options: StorageOptions | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 1024,
) -> Iterator[list[dict]]:
    """Yield the result records under ``prefix`` as lists of dicts (at most ``batch_size`` each), part by part.

    ``columns`` limits what is read (None: every column of each part; ``id`` is always read); a requested
    column that a part lacks is None in its records. Raises StorageError for an unreadable part.
    """
    index = read_record_index(prefix, options)
    for part in record_files(prefix, options):
        filesystem, path = resolve(part, options)
        try:
            parquet = pq.ParquetFile(filesystem.open_input_file(path))
            present = parquet.schema_arrow.names
            wanted = [name for name in dict.fromkeys(["id", *(columns or present)]) if name in present]
            absent = [name for name in (columns or ()) if name not in present]
            for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
                records = []
                for record in pa.Table.from_batches([batch]).to_pylist():
                    record_id = record.get("id")
                    if record_id is not None and index.get(record_id, (None, part))[1] != part:
                        continue  # superseded by a record in another part
                    for name in absent:
                        record[name] = None
                    records.append(record)
                if records:
                    yield records
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read result part {redact_uri(part)}: {exc}") from exc
