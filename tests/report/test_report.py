"""The HTML report's files: summary, thumbnails (reused on a re-run), index and row chunks; escaping."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from diffedit_batch.data.records import write_record_part
from diffedit_batch.report import build_report


def _index(report_dir) -> dict:
    text = (report_dir / "data" / "index.js").read_text()
    return json.loads(re.fullmatch(r"window\.DIFFEDIT_INDEX=(.*);\n", text, re.DOTALL).group(1))


@pytest.mark.slow
def test_report_of_the_job(report_job, tmp_path):
    out = tmp_path / "report"
    result = build_report(str(report_job.prefix), output=str(out), chunk_rows=2, workers=2)
    assert (result.records, result.thumbnails_made, result.thumbnails_reused, result.thumbnails_failed) == (5, 3, 0, 0)
    thumbs = sorted(p.name for p in (out / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 9
    with Image.open(out / "thumbs" / next(t for t in thumbs if t.endswith("-edit.jpg"))) as thumb:
        assert max(thumb.size) <= 128 and thumb.format == "JPEG"
    index = _index(out)
    assert index["count"] == 5 and sorted(index["statuses"]) == ["error", "ok"]
    assert sorted(index["errorClasses"]) == ["invalid_row", "storage"]
    assert len(list((out / "data").glob("rows-*.js"))) == 3  # 5 records, 2 a chunk
    page = (out / "index.html").read_text()
    assert "<b>5</b>edits" in page and "<b>3</b>ok" in page and "<b>2</b>failed" in page
    assert "<td>storage</td><td>1</td>" in page and "<td>invalid_row</td><td>1</td>" in page
    assert str(report_job.config.model.pretrained) in page  # model, and settings from the run file
    assert "run file" in page  # throughput timed by the run's own wall time
    assert page.count("<svg") >= 4  # histograms of coverage, PSNR, SSIM and both CLIP scores (if any values)
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing remote

    again = build_report(str(report_job.prefix), output=str(out), chunk_rows=2, workers=2)
    assert (again.thumbnails_made, again.thumbnails_reused) == (0, 3)


def test_untrusted_text_is_escaped_in_the_page(tmp_path):
    prefix = tmp_path / "job"
    evil = "<script>alert(1)</script>"
    write_record_part(str(prefix), [
        {"id": evil, "row_id": "1", "status": "error", "error": evil, "error_class": evil, "run_id": "r",
         "source_prompt": evil, "model_id": evil},
    ], part_name="r-1")
    result = build_report(str(prefix), thumbnails=False)
    page = (prefix / "report" / "index.html").read_text()
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "</script>" not in (prefix / "report" / "data" / "rows-0.js").read_text()
    assert result.records == 1


@pytest.mark.slow
def test_report_and_export_of_an_s3_prefix(report_job, s3_server):
    """The job's records, run file and outputs on S3: the report and the export read and write there alone."""
    from diffedit_batch.data.export import export_dataset
    from diffedit_batch.data.storage import list_files, read_bytes, write_bytes_atomic

    bucket, options = s3_server.make_bucket(), s3_server.options
    prefix = f"{bucket}/job"
    local = report_job.prefix
    for path in [*local.glob("manifest/*.parquet"), *local.glob("runs/*.json")]:
        write_bytes_atomic(f"{prefix}/{path.relative_to(local)}", path.read_bytes(), options)
    result = build_report(prefix, options, workers=2)
    assert result.index_uri == f"{prefix}/report/index.html" and result.records == 5
    assert b"<b>3</b>ok" in read_bytes(result.index_uri, options)
    assert len(list_files(f"{prefix}/report/thumbs", ".jpg", options)) == 9
    assert list_files(f"{prefix}/report/data", ".js", options)[0].startswith(f"{prefix}/report/data/")
    exported = export_dataset(prefix, options=options)
    assert exported.rows == 3 and exported.parts[0].startswith(f"{prefix}/export/part-")


def test_runs_table_and_settings_filter_name_each_records_settings(tmp_path):
    prefix = tmp_path / "job"
    (prefix / "runs").mkdir(parents=True)
    (prefix / "runs" / "r1.json").write_text(json.dumps({
        "run_id": "r1", "seconds": 3.0, "settings": {"aaaa": {"edit": {"guidance_scale": 7.5}}}}))
    write_record_part(str(prefix), [
        {"id": "x", "status": "ok", "run_id": "r1", "settings_fingerprint": "aaaa"},
        {"id": "y", "status": "ok", "run_id": "r1", "settings_fingerprint": "aaaa"},
        {"id": "z", "status": "ok", "run_id": "r0"},  # written before fingerprints existed
    ], part_name="r-1")
    build_report(str(prefix), thumbnails=False)
    page = (prefix / "report" / "index.html").read_text()
    assert "<td>aaaa (2)</td>" in page and "<td>unknown (1)</td>" in page  # the runs table
    assert "<td>aaaa</td><td>2</td><td>edit.guidance_scale=7.5</td>" in page
    assert '<select id="settings">' in page
    index = _index(prefix / "report")
    assert index["settingsPrints"] == ["aaaa", "unknown"] and index["settings"] == [0, 0, 1]
