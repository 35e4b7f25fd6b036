"""Hostile input through the whole job: each bad row gets a clear record, good rows finish, nothing escapes."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.pipeline import run_job

from .conftest import read_records, write_manifest

pytestmark = pytest.mark.slow


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: a decompression bomb's header, cheap to make."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _save(image: Image.Image, path: Path, **options) -> str:
    image.save(path, **options)
    return path.name


@pytest.fixture
def hostile_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: the stored 80x48 shows as 48x80
    files = {
        "grayscale": _save(rgb.convert("L"), folder / "gray.png"),
        "rgba": _save(rgb.convert("RGBA"), folder / "rgba.png"),
        "cmyk": _save(rgb.convert("CMYK"), folder / "cmyk.jpg"),
        "sixteen-bit": _save(Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)), folder / "16bit.png"),
        "palette": _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), folder / "palette.png"),
        "exif-rotated": _save(rgb, folder / "rotated.jpg", exif=exif),
        "odd-size": _save(rgb.resize((37, 23)), folder / "odd.png"),
        "one-pixel": _save(rgb.resize((1, 1)), folder / "one.png"),
        "long-thin": _save(rgb.resize((300, 2)), folder / "thin.png"),
    }
    (folder / "bomb.png").write_bytes(_png_claiming(60_000, 60_000))
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("<html>not an image</html>")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[:200])
    return folder, files


def test_hostile_rows_each_get_a_clear_record(ray_local, job_config, hostile_inputs, tmp_path):
    folder, files = hostile_inputs
    good = {"source_prompt": "a photo", "target_prompt": "a painting"}
    rows = [{"id": name, "image": file, **good} for name, file in files.items()]
    rows += [
        {"id": "bomb", "image": "bomb.png", **good},
        {"id": "zero-bytes", "image": "zero.png", **good},
        {"id": "text-as-png", "image": "text.png", **good},
        {"id": "truncated", "image": "truncated.png", **good},
        {"id": "null-prompts", "image": "gray.png", "source_prompt": None, "target_prompt": None},
        {"id": "empty-target", "image": "gray.png", "source_prompt": "a", "target_prompt": ""},
        {"id": "long-prompt", "image": "gray.png", "source_prompt": "a photo of " + "a very " * 60 + "big cat",
         "target_prompt": "a dog"},
        {"id": "unicode ünïcødé 猫 🐱", "image": "gray.png", "source_prompt": "un chat 猫 🐱", "target_prompt": "un chien 犬"},
        {"id": "a/b/../../../../etc/passwd", "image": "gray.png", **good},
        {"id": "..", "image": "gray.png", **good},
        {"id": "", "image": "gray.png", **good},
        {"id": None, "image": "gray.png", **good},
        {"id": "http-image", "image": "http://127.0.0.1:9/cat.png", **good},
        {"id": "dup", "image": "gray.png", **good},
        {"id": "dup", "image": "rgba.png", **good},
    ]
    manifest = write_manifest(folder / "manifest.parquet", rows)
    output = tmp_path / "out" / "prefix"
    output.parent.mkdir()
    summary = run_job(job_config("job.max_image_pixels=1000000"), str(manifest), str(output))

    records = read_records(output)
    by_id = {}
    for record in records:
        by_id.setdefault(record["id"], []).append(record)
    ok = {name for name, recs in by_id.items() if any(r["status"] == "ok" for r in recs)}
    assert set(files) | {"long-prompt", "unicode ünïcødé 猫 🐱", "a/b/../../../../etc/passwd", "..", "dup"} == ok

    def error(edit_id):
        [record] = [r for r in by_id[edit_id] if r["status"] != "ok"]
        return record["error_class"], record["error"]

    assert error("bomb")[0] == "image_decode" and "megapixel" in error("bomb")[1]
    assert error("zero-bytes")[0] == "image_decode"
    assert error("text-as-png")[0] == "image_decode"
    assert error("truncated")[0] == "image_decode"
    assert error("null-prompts")[0] == "invalid_row" and "target" in error("null-prompts")[1]
    assert error("empty-target")[0] == "invalid_row"
    assert error("http-image")[0] == "storage" and "http" in error("http-image")[1]
    assert error("dup")[0] == "duplicate_id"
    assert [r["status"] for r in by_id[None]] == ["error"] and "no id" in by_id[None][0]["error"]
    assert [r["status"] for r in by_id[""]] == ["error"]
    assert by_id["long-prompt"][0]["prompt_truncated"] is True
    assert by_id["unicode ünïcødé 猫 🐱"][0]["prompt_truncated"] is False
    assert summary.ok == len(ok)

    rotated = by_id["exif-rotated"][0]
    assert (rotated["width"], rotated["height"]) == (48, 80)
    assert Image.open(rotated["image_uri"]).size == (48, 80)
    for name in files:
        record = by_id[name][0]
        assert Image.open(record["image_uri"]).size == Image.open(record["mask_uri"]).size

    # every output stays under the prefix, and nothing is written beside it
    assert os.listdir(output.parent) == ["prefix"]
    for record in records:
        for key in ("image_uri", "mask_uri"):
            if record[key]:
                assert Path(record[key]).resolve().is_relative_to(output.resolve())


def test_a_storage_failure_of_the_runs_own_files_mid_pass_counts_what_it_could_not_record(
        ray_local, job_config, tmp_path, monkeypatch):
    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.pipeline import driver

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(folder / "p.png")
    manifest = write_manifest(tmp_path / "m.parquet", [
        {"id": f"r{k}", "image": "p.png", "source_prompt": "a photo", "target_prompt": "a painting"}
        for k in range(6)])

    class WorkListLost:  # what the edit pass raises when its work list cannot be read: a task's StorageError,
        def iter_batches(self, **kwargs):  # wrapped as Ray wraps it (the wrapper's text a remote traceback)
            error = StorageError("cannot read out/_work/w.parquet: OSError: [Errno 28] No space left on device")
            error.args = (error.args[0] + "\nFailed to read after 1/1 attempts (total backoff 0.0s).\nadvice",)
            wrapper = type("RayTaskError(StorageError)", (StorageError,), {})("\x1b[36mray::Read\x1b[39m\n  File x")
            wrapper.cause = error
            raise wrapper

    monkeypatch.setattr(driver, "edit_pass", lambda *args, **kwargs: WorkListLost())
    summary = run_job(job_config("job.mode=noop"), str(manifest), str(tmp_path / "out"))
    assert summary.status == "failed" and (summary.ok, summary.failed) == (0, 6)
    assert summary.error_classes["storage"] == 6
    assert summary.error == "cannot read out/_work/w.parquet: OSError: [Errno 28] No space left on device"
    run_file = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert run_file["status"] == "failed" and run_file["failed"] == 6 and "\x1b" not in run_file["error"]


def test_a_run_file_that_cannot_be_written_at_the_end_fails_the_run(ray_local, job_config, tmp_path, monkeypatch):
    import errno

    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.pipeline import driver

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(folder / "p.png")
    manifest = write_manifest(folder / "m.parquet", [
        {"id": f"r{k}", "image": "p.png", "source_prompt": "a photo", "target_prompt": "a painting"}
        for k in range(2)])
    real = driver.write_run_metadata

    def full_at_the_end(prefix, metadata, options=None):
        if metadata["status"] != "running":
            raise StorageError(f"writing {prefix}/runs/x.json failed after 1 attempts: OSError: "
                               f"[Errno {errno.ENOSPC}] No space left on device")
        return real(prefix, metadata, options)

    monkeypatch.setattr(driver, "write_run_metadata", full_at_the_end)
    summary = run_job(job_config("job.mode=noop", "job.max_failed_fraction=1.0"), str(manifest),
                      str(tmp_path / "out"))
    assert (summary.ok, summary.status) == (2, "failed")
    assert summary.error.startswith("the run file could not be written (writing ") and "No space left" in summary.error
