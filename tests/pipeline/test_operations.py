"""The job as an operator's scheduler runs it: `diffedit-batch run` in its own process, hostile set-ups, exit codes.

Each test runs the command line as a subprocess (its own in-process Ray), the way cron, a CronJob or a shell
script would, and checks its exit code, what it printed and what it left under the output prefix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.lease import acquire_lease
from diffedit_batch.data.storage import StorageOptions

from .conftest import REPO, read_records, write_manifest

pytestmark = pytest.mark.slow

NOOP = ("job.mode=noop", "model.resolution=64", "job.decode_cpus=0.5", "job.write_cpus=0.5")


def cli(*args: str, env: dict | None = None, timeout: float = 240, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "diffedit_batch.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=run_env(env), cwd=REPO,
                          **popen)


def run_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    env.update(extra or {})
    return env


@pytest.fixture
def run_args(tiny_config_overrides):
    """`run` arguments for configs/tiny.yaml pointed at the session's tiny models, plus `sets`."""
    def make(manifest: Path, output, *sets: str) -> list[str]:
        args = ["run", "--config", str(REPO / "configs" / "tiny.yaml"), "--input", str(manifest), "--output",
                str(output)]
        for value in (*tiny_config_overrides, *sets):
            args += ["--set", value]
        return args

    return make


@pytest.fixture
def photos(tmp_path) -> Path:
    """A manifest of `count` rows over small photos (made on demand)."""
    def make(count: int, name: str = "manifest.parquet", **row) -> Path:
        folder = tmp_path / "photos"
        folder.mkdir(exist_ok=True)
        for k in range(min(count, 8)):
            Image.new("RGB", (64, 48), (30 * k, 80, 200 - 20 * k)).save(folder / f"p{k}.png")
        rows = [{"id": f"r{k}", "image": str(folder / f"p{k % 8}.png"), "source_prompt": "a photo",
                 "target_prompt": "a painting", **row} for k in range(count)]
        return write_manifest(tmp_path / name, rows)

    return make


def run_file(output: Path, run_id: str | None = None) -> dict:
    files = sorted((output / "runs").glob("*.json"))
    runs = [json.loads(path.read_text()) for path in files]
    return next(run for run in runs if run["run_id"] == run_id) if run_id else runs[-1]


# --- one run per output -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["local", "s3"])
def test_two_runs_started_together_on_one_output_edit_each_row_once(run_args, photos, tmp_path, store, request):
    manifest, env = photos(400), {}
    if store == "s3":
        s3 = request.getfixturevalue("s3_server")
        output, env = s3.make_bucket() + "/out", {"AWS_ENDPOINT_URL_S3": s3.endpoint_url}
    else:
        output = str(tmp_path / "out")
    runs = [subprocess.Popen([sys.executable, "-m", "diffedit_batch.cli", *run_args(manifest, output, *NOOP)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(env), cwd=REPO)
            for _ in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results
    refused = next(err for code, _, err in results if code == 3)
    assert "is in use by run" in refused and "host" in refused and "--break-lease" in refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    if store == "s3":  # every record file's rows, duplicates included, and no lease left
        client, bucket = s3.client(), output.removeprefix("s3://").split("/")[0]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
        assert "out/lease.json" not in keys
        records = [row for key in keys if key.startswith("out/manifest/") and key.endswith(".parquet")
                   for row in pq.read_table(pa.BufferReader(client.get_object(Bucket=bucket, Key=key)["Body"]
                                                            .read())).to_pylist()]
    else:
        records = read_records(output)
        assert not (Path(output) / "lease.json").exists()  # released at the end
    assert Counter(r["id"] for r in records) == {f"r{k}": 1 for k in range(400)}


def test_a_live_lease_on_s3_refuses_the_run_before_ray_starts(run_args, photos, s3_server):
    output = s3_server.make_bucket() + "/out"
    env = {"AWS_ENDPOINT_URL_S3": s3_server.endpoint_url}
    holder = acquire_lease(output, "holder-run", StorageOptions(s3_endpoint_url=s3_server.endpoint_url), 600)
    try:
        started = time.perf_counter()
        result = cli(*run_args(photos(4), output, *NOOP), env=env)
        assert result.returncode == 3, result.stderr
        assert "holder-run" in result.stderr and "Traceback" not in result.stderr
        assert time.perf_counter() - started < 60  # no Ray start, no work
    finally:
        holder.release()
    result = cli(*run_args(photos(4), output, *NOOP), env=env)
    assert result.returncode == 0, result.stderr


def test_break_lease_and_stale_work_folders(run_args, photos, tmp_path):
    manifest, output = photos(6), tmp_path / "out"
    stale_work = output / "_work" / "20200101T000000Z-deadbeef"
    stale_work.mkdir(parents=True)
    (stale_work / "plan.parquet").write_bytes(b"left by a run that died")
    holder = acquire_lease(str(output), "someone-else", StorageOptions(), 600)
    holder._stop.set()  # a holder that will never release: only --break-lease gets past it
    result = cli(*run_args(manifest, output, *NOOP), "--break-lease")
    assert result.returncode == 0, result.stderr
    assert "took over the run lease" in result.stderr and "someone-else" in result.stderr
    assert len(read_records(output)) == 6 and not (output / "_work").exists()


# --- failing before any work ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sets", "expected"), [
    (("model.pretrained=models/no-such-model",), "model.pretrained"),
    (("model.pretrained=no-such-org/no-such-model",), "model.pretrained"),
])
def test_a_model_that_cannot_load_fails_in_seconds_in_one_line(run_args, photos, tmp_path, sets, expected):
    started = time.perf_counter()
    result = cli(*run_args(photos(2), tmp_path / "out", *sets))
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "out").exists()


def test_an_output_prefix_that_is_a_file_is_a_clear_error(run_args, photos, tmp_path):
    output = tmp_path / "out"
    output.write_text("a file, not a folder")
    result = cli(*run_args(photos(2), output, *NOOP))
    assert result.returncode == 2 and "--output" in result.stderr and "Traceback" not in result.stderr


def test_a_manifest_part_with_a_corrupt_data_page_is_one_line_exit_2_naming_it(run_args, photos, tmp_path):
    manifest = tmp_path / "parts"
    manifest.mkdir()
    photos(3).rename(manifest / "a.parquet")
    rows = [{"id": f"b{k}", "image": "p.png", "source_prompt": "a photo", "target_prompt": f"a painting {k}"}
            for k in range(500)]
    pq.write_table(pa.Table.from_pylist(rows), manifest / "b.parquet", compression="none", use_dictionary=False)
    data = bytearray((manifest / "b.parquet").read_bytes())
    page = pq.ParquetFile(manifest / "b.parquet").metadata.row_group(0).column(3).data_page_offset
    data[page:page + 32] = b"\xff" * 32  # the footer intact: the preflight's footer read passes
    (manifest / "b.parquet").write_bytes(bytes(data))
    result = cli(*run_args(manifest, tmp_path / "out", *NOOP))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("manifest error: manifest file ") and "b.parquet" in errors[0]
    assert "Traceback" not in result.stderr and "\x1b[" not in result.stderr
    assert read_records(tmp_path / "out") == []  # before any edit
    assert "\x1b" not in run_file(tmp_path / "out")["error"] and "b.parquet" in run_file(tmp_path / "out")["error"]


@pytest.mark.parametrize("layout", ["empty file", "folder with an empty part"])
def test_a_manifest_without_rows_is_zero_edits(run_args, photos, tmp_path, layout):
    if layout == "empty file":
        manifest = write_manifest(tmp_path / "empty.parquet", [])
        expected_ok = 0
    else:
        manifest = tmp_path / "parts"
        manifest.mkdir()
        write_manifest(manifest / "a.parquet", [])
        photos(3).rename(manifest / "b.parquet")
        expected_ok = 3
    result = cli(*run_args(manifest, tmp_path / "out", *NOOP))
    assert result.returncode == 0, result.stderr
    assert f"edits ok {expected_ok}, failed 0" in result.stdout


def test_hostile_rows_and_columns(run_args, tmp_path, photos):
    good = photos(2)
    rows = pq.read_table(good).to_pylist()
    table = pa.table({"id": ["huge-seed", "fine"], "image": [rows[0]["image"]] * 2, "source_prompt": ["a"] * 2,
                      "target_prompt": ["b"] * 2, "seed": pa.array([2**64 - 1, 7], pa.uint64())})
    pq.write_table(table, tmp_path / "seeds.parquet")
    result = cli(*run_args(tmp_path / "seeds.parquet", tmp_path / "out", *NOOP))
    assert result.returncode == 1  # 1 of 2 rows failed: over job.max_failed_fraction
    by_id = {r["id"]: r for r in read_records(tmp_path / "out")}
    assert by_id["huge-seed"]["error_class"] == "invalid_row" and "2**63" in by_id["huge-seed"]["error"]
    assert by_id["fine"]["status"] == "ok"

    duplicated = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array([rows[0]["image"]]),
                                       pa.array(["x"])], names=["id", "id", "image", "target_prompt"])
    pq.write_table(duplicated, tmp_path / "duplicated.parquet")
    result = cli(*run_args(tmp_path / "duplicated.parquet", tmp_path / "out2", *NOOP))
    assert result.returncode == 2
    assert "duplicated column names: id" in result.stderr and "is missing" not in result.stderr


# --- storage that fails ----------------------------------------------------------------------------------------


def test_an_image_on_a_store_that_never_answers_is_that_rows_storage_error(run_args, photos, tmp_path):
    manifest = photos(3)
    table = pq.read_table(manifest).to_pylist()
    table.append({**table[0], "id": "on-gcs", "image": "gs://diffedit-batch-no-such-bucket/picture.png"})
    write_manifest(manifest, table)
    started = time.perf_counter()
    result = cli(*run_args(manifest, tmp_path / "out", *NOOP, "storage.timeout_s=3"))
    assert time.perf_counter() - started < 180
    by_id = {r["id"]: r for r in read_records(tmp_path / "out")}
    assert by_id["on-gcs"]["error_class"] == "storage"
    assert [by_id[f"r{k}"]["status"] for k in range(3)] == ["ok"] * 3
    assert result.returncode == 1  # 1 of 4 failed


def test_credentials_in_uris_are_never_printed_or_stored(run_args, photos, tmp_path):
    manifest = photos(2)
    rows = pq.read_table(manifest).to_pylist()
    rows += [{**rows[0], "id": "keys", "image": "s3://AKIAEXAMPLEKEY:wJalrXUtnFEMI/K7MDENG@bucket/p.png"},
             {**rows[0], "id": "signed",
              "image": "https://user:hunter2@example.invalid/p.png?X-Amz-Signature=f00dcafe&X-Amz-Credential=AKIAX"}]
    write_manifest(manifest, rows)
    output = tmp_path / "out"
    result = cli(*run_args(manifest, output, *NOOP, "storage.allowed_schemes=[file,s3,https]",
                           "storage.s3_endpoint_url=http://127.0.0.1:9", "storage.timeout_s=3",
                           "storage.write_retries=0"), "--verbose")
    report = cli("report", str(output), "--no-thumbnails")
    stored = b"".join(path.read_bytes() for path in output.rglob("*") if path.is_file())
    for secret in ("wJalrXUtnFEMI", "AKIAEXAMPLEKEY", "hunter2", "f00dcafe"):
        for where, text in (("stdout", result.stdout), ("stderr", result.stderr), ("report", report.stderr)):
            assert secret not in text, (where, text)
        assert secret.encode() not in stored
    by_id = {r["id"]: r for r in read_records(output)}
    assert by_id["keys"]["source_image_uri"] == "s3://bucket/p.png" and by_id["keys"]["status"] == "error"


def test_a_full_disk_ends_with_a_summary_a_failed_exit_and_a_clean_rerun(run_args, photos, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the full disk needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        manifest, output = photos(60), disk / "out"
        result = cli(*run_args(manifest, output, *NOOP, "model.resolution=256", "output.png_compress_level=0",
                               "storage.write_retries=0"))
        assert result.returncode == 1, result.stderr
        assert "edits ok" in result.stdout  # the summary line, always
        assert "Traceback" not in result.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        again = cli(*run_args(manifest, output, *NOOP, "model.resolution=256", "output.png_compress_level=0"))
        assert again.returncode == 0, again.stderr
        records = read_records(output)
        assert Counter(r["id"] for r in records) == {f"r{k}": 1 for k in range(60)}
        assert all(r["status"] == "ok" for r in records)
        assert len(list((output / "images").glob("*.png"))) == 60  # orphans of the first run reused, not doubled
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_full_disk_fails_the_run_whatever_the_failed_fraction_and_leaves_no_temp_file(run_args, photos, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the full disk needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        manifest, output = photos(16), disk / "out"
        result = cli(*run_args(manifest, output, *NOOP, "model.resolution=256", "output.png_compress_level=0",
                               "storage.write_retries=0", "job.max_failed_fraction=1.0"))
        assert result.returncode == 1, result.stderr
        # the run's one line (a worker's warning forwarded by Ray may arrive after it)
        [line] = [line for line in result.stderr.splitlines() if line.startswith("run failed: ")]
        assert "No space left on device" in line, result.stderr
        assert "could not be recorded" in line or "could not be written" in line, line
        assert "Traceback" not in result.stderr
        left = [str(path.relative_to(disk)) for path in disk.rglob("*") if path.name.endswith(".tmp")]
        assert left == []
    finally:
        subprocess.run(["umount", "-l", str(disk)])


# --- interrupts and output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_with_one_line_a_summary_and_an_interrupted_run_file(run_args, photos, tmp_path,
                                                                                signal_number):
    manifest, output = photos(20000), tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "diffedit_batch.cli", *run_args(manifest, output, *NOOP,
                                                                                    "job.batch_size=4")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(), cwd=REPO)
    deadline = time.time() + 180
    while not (output / "manifest").exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # until the first records are written: the edit pass runs
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signal_number)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "interrupted by" in stderr and "Traceback" not in stderr and "Aborted" not in stderr, stderr
    assert "edits ok" in stdout  # what was recorded
    metadata = run_file(output)
    assert metadata["status"] == "interrupted" and metadata["finished_at"] and metadata["ok"] is not None
    assert not (output / "lease.json").exists()
    records = read_records(output)
    assert len(records) == len({r["id"] for r in records}) and all(r["status"] == "ok" for r in records)


def test_a_run_whose_lease_is_taken_over_stops_writing_and_fails(run_args, photos, tmp_path):
    manifest, output = photos(20000), tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "diffedit_batch.cli", *run_args(manifest, output, *NOOP,
                                                                                    "job.batch_size=4",
                                                                                    "job.lease_timeout_s=2")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(), cwd=REPO)
    deadline = time.time() + 180
    while not (output / "manifest").exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before its lease could be taken"
    other = acquire_lease(str(output), "the-other-run", StorageOptions(), timeout_s=600, break_lease=True)
    try:
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 1, stderr
        assert "taken over by run the-other-run" in stderr and "this run stopped" in stderr, stderr
        assert "Traceback" not in stderr, stderr
        assert "edits ok" in stdout
        assert run_file(output)["status"] == "failed" and "the-other-run" in run_file(output)["error"]
        assert json.loads((output / "lease.json").read_text())["run_id"] == "the-other-run"  # left to its holder
        recorded = len(read_records(output))
        assert recorded < 20000  # it stopped when it learnt, not at the end
        time.sleep(2)
        assert len(read_records(output)) == recorded  # nothing written after it stopped
    finally:
        other.release()


def test_a_run_is_quiet_by_default(run_args, photos, tmp_path):
    result = cli(*run_args(photos(6), tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    for noise in ("logging_progress", "streaming_executor", "skip_prk_steps", "Token authentication",
                  "Loading weights", "Progress bars"):
        assert not any(noise in line for line in lines), noise
    assert len(lines) <= 8, result.stderr
    assert result.stdout.startswith("edits ok 6")
    assert run_file(tmp_path / "out")["status"] == "done"
