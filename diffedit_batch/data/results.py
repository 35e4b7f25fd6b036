"""Reading the result manifest back, streaming: the records of a finished (or resumed) job, one batch at a time.

After a completed run the manifest holds one record per edit (the run's compaction removes superseded ones). A
run that was stopped before its compaction may leave an earlier `error` record beside the `ok` record that
replaced it, or an earlier `ok` record beside the one of a revised request; readers (the report, the training
export) still see one record per edit: an `ok` record wins, the latest finished of them, otherwise the first file's
(in name order). Duplicate records (one per later manifest row with an id already
edited) are all kept. Files written before a column existed read as nulls in that column. Memory is one batch
of records plus the winning file of each edit id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .layout import OutputLayout
from .records import RecordFile, list_record_files, read_record_file
from .status import Status
from .storage import StorageError, StorageOptions, file_type, redact_uri, resolve

__all__ = ["NotAJobOutput", "check_job_output", "iter_result_records"]


class NotAJobOutput(StorageError):
    """A prefix given to report, export or compact that holds no job's output (missing, a file, another folder)."""


def check_job_output(prefix: str, options: StorageOptions | None = None) -> None:
    """Raise NotAJobOutput unless ``prefix`` is a folder (an object-store prefix) holding a job's output: its result
    manifest, its run files or its lease. Checked before anything is written, so a mistyped prefix creates nothing
    (report and export used to create PREFIX/report or PREFIX/export there and exit 0)."""
    where = redact_uri(prefix)
    kind = file_type(prefix, options)
    if kind == pafs.FileType.NotFound:
        raise NotAJobOutput(f"{where} does not exist; give the --output prefix of a run")
    if kind == pafs.FileType.File:
        raise NotAJobOutput(f"{where} is a file, not a job's output folder; give the --output prefix of a run")
    layout = OutputLayout(prefix)
    if all(file_type(uri, options) == pafs.FileType.NotFound for uri in (layout.records, layout.runs, layout.lease)):
        raise NotAJobOutput(f"{where} holds no job output (no manifest/, runs/ or lease.json); give the --output "
                            "prefix of a run")


def _winning_files(files: list[RecordFile], options: StorageOptions | None) -> dict[str, int]:
    """Edit id -> index of the file whose (non-duplicate) record of it is read."""
    winners: dict[str, tuple[int, bool, object]] = {}
    for index, file in enumerate(files):
        table = read_record_file(file, options, columns=["id", "status", "finished_at"])
        columns = (table.column(name).to_pylist() for name in ("id", "status", "finished_at"))
        for edit_id, status, finished in zip(*columns):
            if edit_id is None or status == Status.DUPLICATE:
                continue
            ok = status == Status.OK
            previous = winners.get(edit_id)
            if (previous is None or (ok and not previous[1])
                    or (ok and previous[1] and finished is not None and previous[2] is not None
                        and finished > previous[2])):
                winners[edit_id] = (index, ok, finished)
    return {edit_id: index for edit_id, (index, _, _) in winners.items()}


def iter_result_records(
    prefix: str,
    options: StorageOptions | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 1024,
) -> Iterator[list[dict]]:
    """Yield the result records under ``prefix`` as lists of dicts (at most ``batch_size`` each), file by file.

    ``columns`` limits what is read (None: every column of each file; ``id`` and ``status`` are always read); a
    requested column that a file lacks is None in its records. Raises StorageError for an unreadable file.
    """
    files = list_record_files(prefix, options).live
    winners = _winning_files(files, options)
    for index, file in enumerate(files):
        filesystem, path = resolve(file.uri, options)
        try:
            parquet = pq.ParquetFile(filesystem.open_input_file(path))
            present = parquet.schema_arrow.names
            wanted = [name for name in dict.fromkeys(["id", "status", *(columns or present)]) if name in present]
            absent = [name for name in (columns or ()) if name not in present]
            for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
                records = []
                for record in pa.Table.from_batches([batch]).to_pylist():
                    record_id = record.get("id")
                    if (record_id is not None and record.get("status") != Status.DUPLICATE
                            and winners.get(record_id, index) != index):
                        continue  # superseded by a record in another file
                    for name in absent:
                        record[name] = None
                    records.append(record)
                if records:
                    yield records
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read result file {redact_uri(file.uri)}: {exc}") from exc
