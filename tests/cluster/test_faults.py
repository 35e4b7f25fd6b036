"""Processes dying mid-run: an edit actor (Ray restarts it) and the driver (a re-run finishes the job).

Either way every edit ends as exactly one ok record, and no file under a final name is ever partial.
"""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.records import list_record_files
from diffedit_batch.data.results import iter_result_records

from .conftest import (
    PYTHON,
    REPO,
    assert_each_id_once_ok,
    clean_env,
    edit_actor_processes,
    job_args,
    kill_processes,
    photo_manifest,
    process_tree,
    read_records,
)

pytestmark = pytest.mark.slow

EDITS = 20
# One edit per batch and 30 steps: the job is under way, and far from done, when the first parts appear.
SLOW_JOB = ("job.num_actors=1", "job.batch_size=1", "job.max_tasks_in_flight_per_actor=1", "job.record_batch_size=1",
            "job.decode_cpus=0.5", "job.write_cpus=0.5", "edit.num_inference_steps=30")


def record_parts(output: Path) -> list[Path]:
    return sorted((output / "manifest").glob("part-*.parquet"))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _is_ray_agent(process: psutil.Process) -> bool:
    try:
        return process.name() in ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    except psutil.NoSuchProcess:
        return False


def wait_for_replacement(roots: list[int], driver: subprocess.Popen, timeout: float) -> list[psutil.Process]:
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        replacements = edit_actor_processes(roots)
        if replacements:
            return replacements
        time.sleep(0.2)
    return []


def test_killed_edit_actor_is_restarted_and_each_edit_is_recorded_once(two_node_cluster, tiny_model_dir, tmp_path):
    ids = [f"actor-{k:03d}" for k in range(EDITS)]
    manifest = photo_manifest(tmp_path / "in", EDITS, prefix="actor")
    output = tmp_path / "out"
    args = job_args(manifest, output, tiny_model_dir, *SLOW_JOB, "job.cpus_per_actor=2")
    log_path = tmp_path / "job.log"
    roots = [node.pid for node in two_node_cluster.nodes]
    with open(log_path, "wb") as log:
        driver = subprocess.Popen([PYTHON, str(REPO / "jobs" / "edit_manifest.py"), *args], stdout=log,
                                  stderr=subprocess.STDOUT, env=clean_env(RAY_ADDRESS=two_node_cluster.address))
    try:
        wait_for(lambda: len(record_parts(output)) >= 2 or driver.poll() is not None, 240, "the first records")
        assert driver.poll() is None, "the job finished before the kill:\n" + log_path.read_text()[-3000:]
        (actor,) = edit_actor_processes(roots)
        recorded_before_kill = len(read_records(output))
        actor.send_signal(signal.SIGKILL)
        actor.wait(timeout=10)
        # Ray starts the actor again in a new process (max_restarts=-1), which retries the lost batch
        replacements = wait_for_replacement(roots, driver, timeout=120)
        status = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            kill_processes(process_tree([driver.pid]))
    assert status == 0, log_path.read_text()[-4000:]
    assert replacements and all(process.pid != actor.pid for process in replacements)
    assert 0 < recorded_before_kill < EDITS
    assert_each_id_once_ok(output, ids)


def test_killed_driver_leaves_only_whole_files_and_a_rerun_finishes_exactly_once(tiny_model_dir, tmp_path):
    """`diffedit-batch run` with its in-process Ray, SIGKILLed mid-run, then run again to the end."""
    ids = [f"driver-{k:03d}" for k in range(EDITS)]
    manifest = photo_manifest(tmp_path / "in", EDITS, prefix="driver")
    output = tmp_path / "out"
    command = [PYTHON, "-m", "diffedit_batch.cli", "run",
               *job_args(manifest, output, tiny_model_dir, *SLOW_JOB, "job.cpus_per_actor=1")]
    with open(tmp_path / "killed.log", "wb") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: len(record_parts(output)) >= 2 or driver.poll() is not None, 240, "the first records")
        assert driver.poll() is None, "the job finished before the kill:\n" + (tmp_path / "killed.log").read_text()[-3000:]
        tree = process_tree([driver.pid])  # its in-process Ray: GCS, raylet, workers
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        # Ray's processes share the driver's fate: no worker may go on writing while the re-run reads the records.
        # (Ray's dashboard and runtime-env agents outlive a SIGKILLed driver for a while; they write none of ours.)
        workers = [p for p in tree if not _is_ray_agent(p)]
        _, alive = psutil.wait_procs(workers, timeout=60)
        leftovers = [(p.pid, p.name()) for p in alive]
    finally:
        kill_processes(process_tree([driver.pid]) + [p for p in tree if p.is_running()])
    assert not leftovers, f"processes of the killed run still alive after 60 s: {leftovers}"

    # Nothing under a final name is partial; temp files, if any, start with '.' and readers skip them.
    for folder in ("images", "masks"):
        for png in (output / folder).glob("*.png"):
            if not png.name.startswith("."):
                Image.open(png).load()
    for part in record_parts(output):
        pq.read_table(part)
    temp_files = [p.name for p in output.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in temp_files), temp_files
    ours = Counter(record["id"] for batch in iter_result_records(str(output)) for record in batch)
    recorded = Counter(record["id"] for record in ds.dataset(str(output / "manifest"), format="parquet").to_table().to_pylist())
    assert ours == recorded and all(count == 1 for count in recorded.values())
    assert 0 < len(recorded) < EDITS, "the kill should land mid-run"
    for record in read_records(output):
        assert record["status"] == "ok"
        Image.open(record["image_uri"]).load()
        Image.open(record["mask_uri"]).load()

    rerun = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    summary = re.search(r"edits ok (\d+), failed (\d+), duplicates (\d+), skipped (\d+)", rerun.stdout)
    assert summary, rerun.stdout
    assert tuple(map(int, summary.groups())) == (EDITS - len(recorded), 0, 0, len(recorded))
    assert_each_id_once_ok(output, ids)


def test_a_write_killed_before_its_rename_leaves_a_temp_file_that_readers_skip(tmp_path):
    """SIGKILL between writing the temp file and renaming it: the final name never appears, half-written."""
    prefix = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from diffedit_batch.data import records, storage
        records.write_record_part({str(prefix)!r}, [{{"id": "a", "status": "ok", "run_id": "r"}}], part_name="one")
        storage.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # die just before the rename
        records.write_record_part({str(prefix)!r}, [{{"id": "b", "status": "ok", "run_id": "r"}}], part_name="two")
    """)
    died = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr
    names = sorted(p.name for p in (prefix / "manifest").iterdir())
    assert names[-1] == "part-one.parquet" and len(names) == 2
    assert names[0].startswith(".part-two.parquet.") and names[0].endswith(".tmp")  # the orphaned temp file
    assert [f.name for f in list_record_files(str(prefix)).live] == ["part-one.parquet"]
    assert [r["id"] for r in read_records(prefix)] == ["a"]


def test_a_run_killed_during_its_compaction_leaves_one_record_per_edit_after_a_rerun(tiny_model_dir, tmp_path):
    """The driver dies right after the compaction wrote its first merged file, before it deleted the parts it
    merged: the records are then in two files. Ours read each once; the re-run finishes the compaction."""
    edits = 6
    ids = [f"compact-{k:03d}" for k in range(edits)]
    manifest = photo_manifest(tmp_path / "in", edits, prefix="compact")
    output = tmp_path / "out"
    args = job_args(manifest, output, tiny_model_dir, "job.batch_size=1", "job.record_batch_size=1",
                    "edit.num_inference_steps=2", "edit.num_maps_per_mask=1")
    script = textwrap.dedent(f"""
        import os, signal, sys
        from diffedit_batch.data import compaction
        compaction.delete = lambda uri, options=None: os.kill(os.getpid(), signal.SIGKILL)
        from diffedit_batch.cli import main
        sys.exit(main(["run", *{args!r}]))
    """)
    with open(tmp_path / "killed.log", "wb") as log:
        driver = subprocess.Popen([PYTHON, "-c", script], stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                                  cwd=REPO)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: driver.poll() is not None, 300, "the kill during compaction")
        tree = process_tree([driver.pid])
    finally:
        kill_processes(process_tree([driver.pid]) + [p for p in tree if p.is_running()])
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    found = list_record_files(str(output))
    assert len(found.live) == 1 and found.live[0].name.startswith("records-") and len(found.dead) >= 2
    plain = Counter(r["id"] for r in read_records(output))
    assert set(plain) == set(ids) and max(plain.values()) == 2  # a plain reader sees the dead parts too...
    assert sorted(r["id"] for batch in iter_result_records(str(output)) for r in batch) == ids  # ...ours does not

    rerun = subprocess.run([PYTHON, "-m", "diffedit_batch.cli", "run", *args], capture_output=True, text=True,
                           env=clean_env(), cwd=REPO, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    assert re.search(rf"edits ok 0, failed 0, duplicates 0, skipped {edits}", rerun.stdout), rerun.stdout
    assert_each_id_once_ok(output, ids)
    assert not list_record_files(str(output)).dead


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_run_killed_mid_shard_leaves_whole_shards_and_a_rerun_records_each_edit_once(
        storage, s3_server, tiny_model_dir, tmp_path):
    """The webdataset format, shards of two edits, the driver SIGKILLed while shards are being written: every shard
    under its final name is whole, no record names a missing member, and the re-run leaves one record per edit
    and no shard that no record names. On local disk and on the local S3 server."""
    from diffedit_batch.data.layout import OutputLayout
    from diffedit_batch.data.outputs import OutputReader
    from diffedit_batch.data.storage import list_files, read_bytes

    edits = 12
    ids = [f"shard-{k:03d}" for k in range(edits)]
    manifest = photo_manifest(tmp_path / "in", edits, prefix="shard")
    if storage == "s3":
        output, options = s3_server.make_bucket() + "/out", s3_server.options
        extra = (f"storage.s3_endpoint_url={s3_server.endpoint_url}", "storage.s3_region=us-east-1")
    else:
        output, options, extra = str(tmp_path / "out"), None, ()
    layout = OutputLayout(output)
    args = job_args(manifest, output, tiny_model_dir, *SLOW_JOB, "job.cpus_per_actor=1", "output.format=webdataset",
                    "output.shard_rows=2", *extra)
    command = [PYTHON, "-m", "diffedit_batch.cli", "run", *args]
    with open(tmp_path / "killed.log", "wb") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: (list_files(layout.shards, ".tar", options) and list_record_files(output, options).live)
                 or driver.poll() is not None, 300, "the first shard and its records")
        assert driver.poll() is None, "the job finished before the kill:\n" + (tmp_path / "killed.log").read_text()[-3000:]
        tree = process_tree([driver.pid])
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        psutil.wait_procs([p for p in tree if not _is_ray_agent(p)], timeout=60)
    finally:
        kill_processes(process_tree([driver.pid]) + [p for p in tree if p.is_running()])

    import io
    import tarfile

    for shard in list_files(layout.shards, None, options):  # whole, under every final name
        assert shard.endswith(".tar"), shard
        with tarfile.open(fileobj=io.BytesIO(read_bytes(shard, options))) as tar:
            assert all(tar.extractfile(member).read() is not None for member in tar.getmembers())
    reader = OutputReader(options)
    recorded = [r for batch in iter_result_records(output, options) for r in batch]
    assert 0 < len(recorded) < edits, "the kill should land mid-run"
    for record in recorded:  # no record names a missing member
        Image.open(io.BytesIO(reader.read(record["image_uri"]))).load()
        Image.open(io.BytesIO(reader.read(record["mask_uri"]))).load()

    rerun = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    assert re.search(rf"skipped {len(recorded)} ", rerun.stdout), rerun.stdout
    records = [r for batch in iter_result_records(output, options) for r in batch]
    assert sorted(r["id"] for r in records) == ids and all(r["status"] == "ok" for r in records)
    named = {record["image_uri"].rsplit("#", 1)[0] for record in records}
    assert set(list_files(layout.shards, None, options)) == named  # no shard that no record names
    for record in records:
        Image.open(io.BytesIO(reader.read(record["image_uri"]))).load()
