"""Building the report: one streaming pass over the result manifest writes everything under PREFIX/report/."""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass

from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.results import iter_result_records
from diffedit_batch.data.run_metadata import read_run_metadata
from diffedit_batch.data.status import Status
from diffedit_batch.data.storage import StorageOptions, join, list_files, redact_uri, write_bytes_atomic

from .candidates import Funnel
from .histogram import histogram_svg
from .page import render_page
from .pages import CANDIDATE_METRICS, METRICS, PageData
from .summary import Summary
from .thumbs import ThumbnailWriter, thumb_key

log = logging.getLogger(__name__)

_COLUMNS = [
    "id", "status", "error", "error_class", "image_uri", "mask_uri", "source_image_uri", "source_prompt",
    "target_prompt", "seed", "model_id", "edit_s", "run_id", "finished_at", "settings_fingerprint", *METRICS,
    "candidate", "candidate_settings", "filter_reason", *CANDIDATE_METRICS, "class_name",
]


@dataclass
class ReportResult:
    """Where the report is and what building it did."""

    index_uri: str
    records: int
    thumbnails_made: int
    thumbnails_reused: int
    thumbnails_failed: int
    seconds: float


def build_report(
    prefix: str,
    options: StorageOptions | None = None,
    *,
    output: str | None = None,
    thumb_size: int = 128,
    page_size: int = 48,
    chunk_rows: int = 256,
    workers: int = 8,
    thumbnails: bool = True,
) -> ReportResult:
    """Write the HTML report of the job under ``prefix`` (local, s3:// or gs://) to ``output``.

    ``output`` defaults to ``PREFIX/report``; open its ``index.html`` in a browser (from disk works). Thumbnails
    (``thumb_size`` px JPEGs, made by ``workers`` threads) are made for every ok record and reused when a
    re-run finds them, and for every filtered candidate whose pictures were kept (``candidates.keep_rejected``);
    ``thumbnails=False`` skips them. The grid shows ``page_size`` records a page; the records' text is split into
    files of ``chunk_rows``. With candidates the page adds their survival funnel and shows a request's candidates
    side by side (``report.candidates``). Memory: the index (about 60 bytes a record; candidates add about 20)
    plus one batch of records.
    """
    started = time.perf_counter()
    prefix = prefix.rstrip("/")
    report_uri = (output or OutputLayout(prefix).report).rstrip("/")
    thumbs_uri = join(report_uri, "thumbs")
    existing = {posixpath.basename(uri) for uri in list_files(thumbs_uri, ".jpg", options)} if thumbnails else set()
    summary = Summary()
    funnel = Funnel()
    pages = PageData(report_uri, options, chunk_rows)
    with ThumbnailWriter(thumbs_uri, thumb_size, options, workers, existing) as writer:
        for batch in iter_result_records(prefix, options, columns=_COLUMNS):
            for record in batch:
                summary.add(record)
                funnel.add(record)
                key = None
                if thumbnails and record.get("id") is not None and _has_pictures(record):
                    key = thumb_key(record)
                    writer.submit(record, key)
                pages.add(record, key)
    pages.finish(page_size)
    histograms = [histogram_svg(pages.metrics[name], label)
                  for name, (label, _) in {**METRICS, **CANDIDATE_METRICS}.items() if name in pages.metrics]
    note = (
        f"thumbnails: {writer.made} made, {writer.reused} reused, {writer.failed} failed"
        if thumbnails else "no thumbnails"
    )
    page = render_page(
        prefix=redact_uri(prefix), summary=summary, runs=read_run_metadata(prefix, options),
        histograms=histograms, thumbs_note=note, funnel=funnel if funnel.generated else None,
    )
    index_uri = join(report_uri, "index.html")
    write_bytes_atomic(index_uri, page.encode("utf-8"), options)
    result = ReportResult(index_uri, len(pages), writer.made, writer.reused, writer.failed,
                          time.perf_counter() - started)
    log.info("report of %d records at %s (%s) in %.1f s", result.records, redact_uri(index_uri), note, result.seconds)
    return result


def _has_pictures(record: dict) -> bool:
    """An ok record, or a filtered candidate whose edit and mask were written (``candidates.keep_rejected``)."""
    if record["status"] == Status.OK:
        return True
    return record["status"] == Status.FILTERED and bool(record.get("image_uri")) and bool(record.get("mask_uri"))
