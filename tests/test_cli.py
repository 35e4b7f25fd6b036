"""The command line without Ray: compact (and its errors), and how `run` reports what the library raises."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pyarrow.dataset as ds
import pytest

from diffedit_batch import pipeline
from diffedit_batch.cli import main
from diffedit_batch.data.lease import LeaseStorageError, acquire_lease
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.pipeline import preflight
from diffedit_batch.data.records import list_record_files, write_record_part


def test_compact_merges_an_older_runs_many_small_parts(tmp_path, capsys):
    prefix = tmp_path / "job"
    for k in range(25):  # what a run before compaction existed left: a part per write batch of 8 edits
        write_record_part(str(prefix), [{"id": f"e{k}-{i}", "status": "ok", "run_id": "old"} for i in range(8)],
                          part_name=f"old-{k:03d}")
    assert main(["compact", str(prefix), "--records-per-file", "50"]) == 0
    assert "record files 25 -> 4" in capsys.readouterr().out
    assert sorted(f.rows for f in list_record_files(str(prefix)).live) == [32, 56, 56, 56]  # 7 parts, and the rest
    records = ds.dataset(str(prefix / "manifest"), format="parquet").to_table().to_pylist()
    assert Counter(r["id"] for r in records) == {f"e{k}-{i}": 1 for k in range(25) for i in range(8)}


def test_compact_leaves_one_record_per_edit_and_no_unnamed_pictures(tmp_path, capsys):
    """What a run killed outright in a redo leaves: the edit's earlier record beside its new one, and a picture whose
    record was never written."""
    import datetime as dt

    prefix = tmp_path / "job"
    (prefix / "images").mkdir(parents=True)
    for name in ("a.png", "a.run-2.png", "orphan.run-2.png"):
        (prefix / "images" / name).write_bytes(b"png")
    when = [dt.datetime(2026, month, 1, tzinfo=dt.timezone.utc) for month in (1, 2)]
    write_record_part(str(prefix), [{"id": "a", "status": "ok", "run_id": "run-1", "finished_at": when[0],
                                     "image_uri": str(prefix / "images" / "a.png")}], part_name="run-1")
    write_record_part(str(prefix), [{"id": "a", "status": "ok", "run_id": "run-2", "finished_at": when[1],
                                     "image_uri": str(prefix / "images" / "a.run-2.png")}], part_name="run-2")
    assert main(["compact", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 extra record(s) of edits recorded twice (the newest kept) from 1 file(s), and 1 output" in out
    assert "removed 1 image or mask file(s) that no record names" in out
    records = ds.dataset(str(prefix / "manifest"), format="parquet").to_table().to_pylist()
    assert [(r["id"], r["run_id"]) for r in records] == [("a", "run-2")]
    assert sorted(p.name for p in (prefix / "images").iterdir()) == ["a.run-2.png"]


def test_compact_refuses_a_bad_setting_in_one_line(tmp_path, capsys):
    assert main(["compact", str(tmp_path), "--records-per-file", "0"]) == 2
    assert capsys.readouterr().err.startswith("compact error: records_per_file must be a positive integer")


def test_the_global_options_go_before_or_after_the_command():
    from diffedit_batch.cli import build_parser

    parser = build_parser()
    for argv, verbose, level in (
        (["compact", "p"], None, None),
        (["--verbose", "compact", "p"], True, None),
        (["compact", "p", "--verbose"], True, None),
        (["--log-level", "DEBUG", "compact", "p"], None, "DEBUG"),
        (["--log-level", "DEBUG", "run", "--config", "c", "--input", "i", "--output", "o", "--verbose"], True,
         "DEBUG"),
    ):
        args = parser.parse_args(argv)
        assert (getattr(args, "verbose", None), getattr(args, "log_level", None)) == (verbose, level), argv


def test_compact_waits_for_no_run_it_takes_the_output_lease(tmp_path, capsys):
    prefix = str(tmp_path / "job")
    write_record_part(prefix, [{"id": "a", "status": "ok", "run_id": "old"}], part_name="old-000")
    running = acquire_lease(prefix, "a-run", StorageOptions(), timeout_s=600)
    try:
        assert main(["compact", prefix]) == 3
        assert "in use by run a-run" in capsys.readouterr().err
    finally:
        running.release()
    assert main(["compact", prefix]) == 0


RUN = ["run", "--config", "configs/tiny.yaml", "--input", "in.parquet"]
SECRET = "s3://AKIAEXAMPLE:s3cr3tKey@bucket/in.parquet"


@pytest.fixture
def no_model_check(monkeypatch):
    from diffedit_batch.pipeline import context

    monkeypatch.setattr(preflight, "check_models", lambda config, **kwargs: None)
    monkeypatch.setattr(context, "resolve_model_family", lambda config: config)  # no model to read the family of


def _raising(error):
    def run_job(*args, **kwargs):
        raise error
    return run_job


def test_an_unexpected_error_is_one_redacted_line_and_exit_1(tmp_path, monkeypatch, capsys, no_model_check):
    monkeypatch.setattr(pipeline, "run_job", _raising(RuntimeError(f"cannot read {SECRET}")))
    assert main([*RUN, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run failed: RuntimeError: cannot read s3://bucket/in.parquet")
    assert "s3cr3tKey" not in err and "Traceback" not in err and "--verbose" in err
    assert main([*RUN, "--output", str(tmp_path / "out"), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "s3cr3tKey" not in err


def test_a_lease_the_storage_could_not_give_is_exit_1_not_bad_input(tmp_path, monkeypatch, capsys, no_model_check):
    monkeypatch.setattr(pipeline, "run_job", _raising(LeaseStorageError("cannot take the run lease: timed out")))
    assert main([*RUN, "--output", str(tmp_path / "out")]) == 1
    assert "run the same command again" in capsys.readouterr().err


def test_a_config_error_does_not_echo_a_secret(tmp_path, capsys):
    code = main([*RUN, "--output", str(tmp_path / "out"), "--set", f"storage.s3_endpoint_url={SECRET}x"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("config error") and "s3cr3tKey" not in err


def test_sigterm_during_the_preflight_is_an_interrupt_not_a_silent_143(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "check_models", lambda config, **kwargs: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    assert main([*RUN, "--output", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous  # the command's handler is gone again


def test_compact_loads_no_ray(tmp_path):
    """compact, report and export are storage commands: taking the lease must not pull the pipeline (Ray) in."""
    import subprocess
    import sys

    write_record_part(str(tmp_path / "job"), [{"id": "a", "status": "ok", "run_id": "old"}], part_name="old-000")
    code = ("import sys; from diffedit_batch.cli import main; "
            f"assert main(['compact', {str(tmp_path / 'job')!r}]) == 0; "
            "assert 'ray' not in sys.modules, 'compact imported Ray'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


# --- hostile set-ups (issue 27) ---------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_unreachable_ray_cluster_is_one_line_exit_2_within_the_bound_the_lease_released(
        tmp_path, monkeypatch, capsys, no_model_check, how):
    import time

    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever the test session started
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init must not be reached"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "image": ["a.png"], "target_prompt": ["a dog"]}), manifest)
    address = f"127.0.0.1:{_closed_port()}"
    args = ["run", "--config", "configs/tiny.yaml", "--input", str(manifest), "--output", str(tmp_path / "out"),
            "--set", "job.connect_timeout_s=2"]
    if how == "--address":
        args += ["--address", address]
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the Ray cluster at {address} did not answer within 2 s" in err
    assert not (tmp_path / "out").exists()  # the lease released, and no run file left


def test_waiting_for_a_cluster_that_comes_up_late_joins_it():
    import socket
    import threading

    from diffedit_batch.pipeline.connection import wait_for_cluster

    port = _closed_port()
    server = socket.socket()

    def start_late():
        server.bind(("127.0.0.1", port))
        server.listen()

    timer = threading.Timer(1.0, start_late)
    timer.start()
    try:
        wait_for_cluster(f"127.0.0.1:{port}", timeout_s=10, retry_s=0.2)  # returns once the head listens
    finally:
        timer.join()
        server.close()


@pytest.mark.parametrize("sets, cuda, expected", [
    (["model.device=cuda"], (False, 0), "model.device: 'cuda', but this machine has no CUDA device"),
    (["model.device=cuda:3"], (True, 2), "model.device: 'cuda:3', but this machine has 2 CUDA device(s)"),
    (["captions.caption_inversion=true", "captions.device=cuda"], (False, 0), "captions.device: 'cuda'"),
])
def test_a_cuda_device_this_machine_lacks_is_refused_in_the_preflight(tmp_path, monkeypatch, capsys, no_model_check,
                                                                       sets, cuda, expected):
    monkeypatch.setattr(preflight, "_cuda_devices", lambda: cuda)
    monkeypatch.setattr(pipeline, "run_job", lambda *a, **k: pytest.fail("the run must not start"))
    args = [*RUN, "--output", str(tmp_path / "out")]
    for value in sets:
        args += ["--set", value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cannot run: ") and expected in err, err
    assert not (tmp_path / "out").exists()


def test_the_device_check_leaves_cluster_runs_and_unused_models_alone(monkeypatch):
    from diffedit_batch.config import load_config

    monkeypatch.setattr(preflight, "_cuda_devices", lambda: (False, 0))
    config = load_config("configs/tiny.yaml", ["model.device=cuda", "concepts.device=cuda"])
    preflight.check_devices(config, local=False)  # a cluster's workers may have the GPUs this driver lacks
    preflight.check_devices(load_config("configs/tiny.yaml", ["concepts.device=cuda"]), local=True)  # no concept rows
    with pytest.raises(preflight.PreflightError, match="concepts.device"):
        preflight.check_devices(load_config("configs/tiny.yaml", ["concepts.device=cuda"]), local=True,
                                concepts=True)
    preflight.check_devices(load_config("configs/tiny.yaml", ["model.device=cuda", "job.mode=noop"]), local=True)


@pytest.mark.parametrize("command", ["report", "export", "compact"])
@pytest.mark.parametrize("where", ["missing", "a file", "another folder"])
def test_a_command_on_a_prefix_that_is_no_job_output_is_one_line_exit_2_creating_nothing(tmp_path, capsys, command,
                                                                                         where):
    (tmp_path / "notes.txt").write_text("not a job")
    (tmp_path / "photos").mkdir()
    prefix = {"missing": tmp_path / "no-such-job", "a file": tmp_path / "notes.txt",
              "another folder": tmp_path / "photos"}[where]
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    assert main([command, str(prefix)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{command} error: {prefix}") and "Errno" not in err, err
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before  # nothing created


@pytest.mark.parametrize("args, message", [
    (["report", "--workers", "0"], "--workers must be a positive number, got 0"),
    (["report", "--thumb-size", "-5"], "--thumb-size must be a positive number, got -5"),
    (["export", "--part-mb", "inf"], "--part-mb must be a positive number, got inf"),
    (["export", "--part-mb", "nan"], "--part-mb must be a positive number, got nan"),
])
def test_numeric_options_of_the_storage_commands_are_checked_in_one_line(tmp_path, capsys, args, message):
    write_record_part(str(tmp_path / "job"), [{"id": "a", "status": "ok", "run_id": "r"}], part_name="r-000")
    assert main([args[0], str(tmp_path / "job"), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err == f"{args[0]} error: {message}\n"


# --- issue 36: exit status and summary agree, input and output apart, the --set hint as typed ---


def test_a_duplicate_id_over_the_fraction_is_named_as_the_summary_counts_it(tmp_path, monkeypatch, capsys):
    from diffedit_batch.pipeline.summary import JobSummary

    monkeypatch.setattr(preflight, "check_models", lambda config, **kwargs: None)

    summary = JobSummary(run_id="r", status="done", ok=15, duplicates=1)
    monkeypatch.setattr(pipeline, "run_job", lambda *args, **kwargs: summary)
    assert main([*RUN, "--output", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert "failed 0, duplicates 1" in out
    assert err == "0 failed and 1 duplicate id(s) of 16 edits (6.2% > job.max_failed_fraction 0.0%)\n"


@pytest.mark.parametrize("output, relation", [
    ("{input}", "is the --input"),
    ("{input}/", "is the --input"),
    ("{input}/./out", "is inside --input"),
    ("{input}/../in/sub/out", "is inside --input"),
    ("{parent}", "holds --input"),
    ("{link}/out", "is inside --input"),
])
def test_an_output_inside_the_input_or_the_reverse_is_refused_before_any_work(tmp_path, monkeypatch, capsys,
                                                                               output, relation):
    folder = tmp_path / "in"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.setattr(preflight, "check_models", lambda config, **kwargs: pytest.fail("checked models"))
    monkeypatch.setattr(pipeline, "run_job", _raising(AssertionError("the run started")))
    output = output.format(input=folder, parent=tmp_path, link=tmp_path / "link")
    code = main(["run", "--config", "configs/tiny.yaml", "--input", str(folder), "--output", output])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"cannot run: --output {output} {relation}")
    assert err.rstrip().endswith("a run would read its own records as manifest rows; choose an output prefix outside "
                                 "the input, and an input outside the output")
    assert sorted(os.listdir(tmp_path)) == ["in", "link"]


def test_object_store_input_and_output_are_compared_by_bucket_and_key(monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "run_job", _raising(AssertionError("the run started")))
    code = main(["run", "--config", "configs/tiny.yaml", "--input", "s3://bucket/jobs/in", "--output",
                 "s3://bucket/jobs/in/out/"])
    assert code == 2 and "--output s3://bucket/jobs/in/out/ is inside --input s3://bucket/jobs/in" in \
        capsys.readouterr().err
    preflight.check_input_apart("s3://bucket/jobs/in", "s3://bucket/jobs/input-out", preflight.StorageOptions())
    preflight.check_input_apart("s3://bucket/jobs/in", "gs://bucket/jobs/in/out", preflight.StorageOptions())


def test_the_set_hint_is_printed_as_typed_and_secrets_stay_redacted(tmp_path, capsys):
    assert main([*RUN, "--output", str(tmp_path / "out"), "--set", "edit.guidance_scale"]) == 2
    assert capsys.readouterr().err == ("config error: override 'edit.guidance_scale' must look like section.key=value "
                                       "(no '=' found)\n")
    from diffedit_batch.redaction import redact_text

    assert redact_text("s3://b/a.png?key=deadbeef&token=t0k&x=1") == "s3://b/a.png?key=***&token=***&x=1"
    assert redact_text("job.token=1 model.key=value") == "job.token=1 model.key=value"


def _not_a_tar(path):
    (path / "in.tar").write_bytes(b"not a tar" * 100)
    return path / "in.tar"


def _two_kinds(path):
    (path / "in").mkdir()
    (path / "in" / "a.tar").write_bytes(b"")
    (path / "in" / "b.parquet").write_bytes(b"")
    return path / "in"


@pytest.mark.parametrize("make, expected", [(_not_a_tar, "in.tar is not a tar file"),
                                            (_two_kinds, "holds more than one kind of input")])
def test_a_bad_labelled_input_is_one_line_and_exit_2_before_any_work(tmp_path, monkeypatch, capsys, no_model_check,
                                                                    make, expected):
    import ray

    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init must not be reached"))
    args = ["run", "--config", "configs/tiny.yaml", "--input", str(make(tmp_path)), "--output", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("manifest error: ") and expected in err, err
