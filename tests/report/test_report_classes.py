"""The report's edits per class: records counted by the class of their row."""

from __future__ import annotations

from diffedit_batch.report.page import render_page
from diffedit_batch.report.summary import Summary


def test_the_report_shows_edits_per_class():
    summary = Summary()
    for status, name in [("ok", "cat"), ("ok", "cat"), ("filtered", "cat"), ("ok", "bird"), ("error", "bird"),
                         ("ok", None)]:
        summary.add({"id": "x", "status": status, "class_name": name, "error_class": "engine", "run_id": "r"})
    assert {name: dict(counts) for name, counts in summary.classes.items()} == {
        "cat": {"ok": 2, "filtered": 1}, "bird": {"ok": 1, "error": 1}}
    page = render_page(prefix="/out", summary=summary, runs={}, histograms=[], thumbs_note="", funnel=None)
    section = page[page.index('id="classes"'):]
    assert "<td>bird</td><td>1</td><td>0</td><td>1</td>" in section
    assert "<td>cat</td><td>2</td><td>1</td><td>0</td>" in section
