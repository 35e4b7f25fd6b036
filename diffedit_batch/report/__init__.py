"""The job's visual report: summary, metric histograms and a paged grid of every edit, as static files.

``build_report(PREFIX)`` streams the result manifest once and writes ``PREFIX/report/index.html`` with
``data/`` (an index of every record, and the records' text in chunks loaded on demand) and ``thumbs/``.
It opens from disk in a browser, offline. Data layer only: no torch, no Ray.
"""

from .build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
