"""Exactly once, for real (noop mode): a picture replaced under its URI is edited again, a redo stopped mid-way
leaves one record per edit naming its own pixels, and no file outlives the records that named it."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.pipeline import run_job

from .conftest import read_records, write_manifest

# Whole runs on the session's Ray (about 40 s together): the slow tier, as the other job tests.
pytestmark = pytest.mark.slow

NOOP = ("job.mode=noop", "model.resolution=64")


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()

    def make(count: int) -> str:
        for k in range(count):
            Image.new("RGB", (32, 24), (20 * k, 80, 90)).save(folder / f"p{k}.png")
        rows = [{"id": f"r{k}", "image": str(folder / f"p{k}.png"), "source_prompt": "a photo",
                 "target_prompt": f"a painting {k}"} for k in range(count)]
        return str(write_manifest(tmp_path / "manifest.parquet", rows))

    make.folder = folder
    return make


def visible(output) -> list[dict]:
    """The records a plain reader of manifest/ sees (pyarrow's dataset, as `datasets` and Ray Data read it)."""
    return ds.dataset(str(Path(output) / "manifest"), format="parquet").to_table().to_pylist()


def loose_files(output) -> set[str]:
    return {str(path) for folder in ("images", "masks") for path in (Path(output) / folder).glob("*.png")}


def named_files(output) -> set[str]:
    return {uri for record in visible(output) for uri in (record["image_uri"], record["mask_uri"]) if uri}


def test_a_picture_replaced_under_its_uri_is_edited_again_and_exported_with_its_new_edit(
        ray_local, job_config, pictures, tmp_path):
    output = str(tmp_path / "out")
    manifest = pictures(3)
    first = run_job(job_config(*NOOP), manifest, output)
    assert first.ok == 3
    before = {r["id"]: r for r in read_records(output)}
    assert before["r1"]["source_identity"].startswith("size:") and len(before["r1"]["source_digest"]) == 32

    # re-cropped and saved over the same file: same URI, other pixels
    Image.new("RGB", (40, 30), (250, 10, 10)).save(pictures.folder / "p1.png")
    again = run_job(job_config(*NOOP), manifest, output)
    assert (again.ok, again.skipped, again.changed, again.sources_changed) == (1, 2, 1, 1)
    assert "of which 1 a changed picture" in again.line()
    after = {r["id"]: r for r in visible(output)}
    assert len(visible(output)) == 3
    assert after["r1"]["run_id"] == again.run_id and after["r1"]["source_digest"] != before["r1"]["source_digest"]
    # the new edit has files of its own; the old ones went with the record that named them
    assert after["r1"]["image_uri"] != before["r1"]["image_uri"] and not Path(before["r1"]["image_uri"]).exists()
    assert loose_files(output) == named_files(output)
    assert json.loads(next(Path(output, "runs").glob(f"{again.run_id}.json")).read_text())["sources_changed"] == 1

    # the export pairs the new picture with the edit of the new picture (noop: the picture itself)
    export_dataset(output, str(tmp_path / "export"))
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "export").to_pylist()}
    source = Image.open(io.BytesIO(rows["r1"]["source_image"]["bytes"]))
    edit = Image.open(io.BytesIO(rows["r1"]["image"]["bytes"])).convert("RGB")
    assert source.size == edit.size == (40, 30) and edit.getpixel((20, 15))[0] > 200

    # nothing changed since: nothing is done; and without the check a replaced picture stays done
    assert run_job(job_config(*NOOP), manifest, output).skipped == 3
    Image.new("RGB", (40, 30), (10, 250, 10)).save(pictures.folder / "p2.png")
    unchecked = run_job(job_config(*NOOP, "job.verify_sources=false"), manifest, output)
    assert (unchecked.ok, unchecked.skipped, unchecked.changed) == (0, 3, 0)


def test_records_without_a_picture_identity_stay_done(ray_local, job_config, pictures, tmp_path):
    output = tmp_path / "out"
    manifest = pictures(2)
    run_job(job_config(*NOOP), manifest, str(output))
    for path in (output / "manifest").glob("*.parquet"):  # as the version before identities wrote them
        pq.write_table(pq.read_table(path).drop_columns(["source_identity", "source_digest"]), path)
    Image.new("RGB", (40, 30), (250, 10, 10)).save(pictures.folder / "p1.png")
    kept = run_job(job_config(*NOOP), manifest, str(output))
    assert (kept.ok, kept.skipped, kept.changed, kept.unverified) == (0, 2, 0, 2)


def interrupt_at_first_new_record(folder: Path, timeout_s: float = 120.0) -> threading.Thread:
    """A thread that sends this process SIGINT (as Ctrl-C) as soon as a record part that is not in `folder` now
    appears there (a commit of the edit pass: the plan's own parts are named `-plan-`)."""
    before = {path.name for path in folder.glob("*.parquet")}

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(path.name not in before and "-plan-" not in path.name for path in folder.glob("part-*.parquet")):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_redo_stopped_mid_way_leaves_one_record_per_edit_each_naming_its_own_pixels(
        ray_local, job_config, pictures, tmp_path):
    output = tmp_path / "out"
    rows = 40
    manifest = pictures(rows)
    small = ("job.batch_size=2", "job.record_batch_size=2")
    first = run_job(job_config(*NOOP, *small), manifest, str(output))
    assert first.ok == rows
    old = {r["id"]: r for r in visible(output)}

    config = job_config(*NOOP, *small, "edit.guidance_scale=5")
    interrupt_at_first_new_record(output / "manifest")
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_job(config, manifest, str(output), on_settings_change="redo")
    summary = stopped.value.summary
    records = visible(output)
    assert sorted(r["id"] for r in records) == sorted(old), "one record per edit, for every reader"
    redone = [r for r in records if r["run_id"] == summary.run_id]
    assert redone and all(r["status"] == "ok" for r in redone)
    # the summary and the run file count what the run recorded
    run_file = json.loads((output / "runs" / f"{summary.run_id}.json").read_text())
    assert run_file["status"] == "interrupted" and run_file["ok"] == summary.ok == len(redone)
    # every record names its own pixels: the redone ones new files, the others the files of the first run
    for record in records:
        assert Path(record["image_uri"]).exists()
        if record["run_id"] == summary.run_id:
            assert record["image_uri"] != old[record["id"]]["image_uri"]
        else:
            assert record == old[record["id"]]
    assert loose_files(output) == named_files(output)
    assert not (output / "_work").exists()

    # the next run finishes the redo, and leaves one record and one picture per edit
    rest = run_job(config, manifest, str(output), on_settings_change="redo")
    assert rest.ok == rows - len(redone) and rest.skipped == len(redone)
    records = visible(output)
    assert sorted(r["id"] for r in records) == sorted(old)
    assert len(loose_files(output)) == 2 * rows and loose_files(output) == named_files(output)


def test_a_new_selection_chooses_again_from_the_recorded_scores_and_leaves_no_demoted_pictures(
        ray_local, job_config, pictures, tmp_path):
    output = tmp_path / "out"
    manifest = pictures(3)
    candidates = ("candidates.count=3", "candidates.rank_by=mask_coverage")
    run_job(job_config(*NOOP, *candidates, "candidates.keep=2"), manifest, str(output))
    assert Counter(r["status"] for r in visible(output)) == {"ok": 6, "filtered": 3}
    assert len(loose_files(output)) == 12 and loose_files(output) == named_files(output)
    first = {r["id"]: r for r in visible(output)}

    # keep lowered: no settings change, nothing edited again; the demoted candidates' pictures go
    lowered = run_job(job_config(*NOOP, *candidates, "candidates.keep=1"), manifest, str(output))
    assert (lowered.ok, lowered.filtered, lowered.skipped, lowered.reselected) == (0, 0, 3, 3)
    records = {r["id"]: r for r in visible(output)}
    assert Counter(r["status"] for r in records.values()) == {"ok": 3, "filtered": 6}
    assert {r["run_id"] for r in records.values()} == {r["run_id"] for r in first.values()}
    demoted = [i for i, r in records.items() if r["status"] == "filtered" and first[i]["status"] == "ok"]
    assert len(demoted) == 3 and all(records[i]["filter_reason"].startswith("ranked below keep") for i in demoted)
    assert len(loose_files(output)) == 6 and loose_files(output) == named_files(output)
    assert run_job(job_config(*NOOP, *candidates, "candidates.keep=1"), manifest, str(output)).reselected == 0

    # keep raised again: the candidates to keep have no pictures any more, so their requests are edited again
    raised = run_job(job_config(*NOOP, *candidates, "candidates.keep=2"), manifest, str(output))
    assert (raised.ok, raised.filtered, raised.changed) == (6, 3, 3)
    assert Counter(r["status"] for r in visible(output)) == {"ok": 6, "filtered": 3}
    assert len(loose_files(output)) == 12 and loose_files(output) == named_files(output)


def test_keep_rejected_changes_which_pictures_are_written_never_a_fingerprint(ray_local, job_config, pictures,
                                                                              tmp_path):
    output = tmp_path / "out"
    manifest = pictures(2)
    candidates = ("candidates.count=2", "candidates.rank_by=mask_coverage")
    run_job(job_config(*NOOP, *candidates), manifest, str(output))
    again = run_job(job_config(*NOOP, *candidates, "candidates.keep_rejected=true"), manifest, str(output))
    assert (again.ok, again.filtered, again.skipped, again.settings_redone) == (0, 0, 2, 0)
