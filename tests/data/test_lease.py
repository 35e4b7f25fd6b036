"""The run lease: one holder at a time on local disk and on S3, renewal, take-over after the timeout, --break-lease."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from diffedit_batch.data import lease as lease_module
from diffedit_batch.data.lease import LeaseError, LeaseHeld, LeaseHolder, LeaseStorageError, acquire_lease
from diffedit_batch.data.layout import OutputLayout
from diffedit_batch.data.storage import StorageOptions, exists, read_bytes, write_bytes_atomic

LOCAL = StorageOptions()


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """An output prefix and its storage options, on local disk and on the local S3 server."""
    if request.param == "local":
        return str(tmp_path / "out"), LOCAL
    server = request.getfixturevalue("s3_server")
    return server.make_bucket() + "/out", server.options


def test_a_second_run_is_refused_with_the_holder_named_until_the_first_releases(place):
    prefix, options = place
    first = acquire_lease(prefix, "run-1", options, timeout_s=60)
    try:
        with pytest.raises(LeaseHeld) as held:
            acquire_lease(prefix, "run-2", options, timeout_s=60)
        message = str(held.value)
        assert "run-1" in message and socket.gethostname() in message and "since" in message
        assert "--break-lease" in message
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "run-1"
    finally:
        first.release()
    assert not exists(OutputLayout(prefix).lease, options)
    second = acquire_lease(prefix, "run-2", options, timeout_s=60)
    second.release()


def test_runs_that_start_together_get_exactly_one_lease(place):
    prefix, options = place
    winners, refused, start = [], [], threading.Barrier(6)

    def contend(index: int) -> None:
        start.wait()
        try:
            winners.append(acquire_lease(prefix, f"run-{index}", options, timeout_s=60))
        except LeaseHeld:
            refused.append(index)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(winners) == 1 and len(refused) == 5
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == winners[0].holder.run_id
    finally:
        for lease in winners:
            lease.release()


def test_a_lease_whose_holder_stopped_renewing_is_taken_over(place):
    prefix, options = place
    stalled = acquire_lease(prefix, "stalled", options, timeout_s=30, clock=lambda: 1_000.0)
    stalled._stop.set()  # its renewal thread is gone, as in a killed driver
    with pytest.raises(LeaseHeld):  # 29 s after its last renewal: still live
        acquire_lease(prefix, "early", options, timeout_s=30, clock=lambda: 1_029.0)
    late = acquire_lease(prefix, "late", options, timeout_s=30, clock=lambda: 1_031.0)
    try:
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "late"
        assert stalled.renew() is False and "late" in stalled.lost  # the stalled holder learns it lost the lease
        stalled.release()  # and does not delete the new holder's lease
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "late"
    finally:
        late.release()


def test_break_lease_takes_a_live_lease(place):
    prefix, options = place
    live = acquire_lease(prefix, "live", options, timeout_s=600)
    breaker = acquire_lease(prefix, "breaker", options, timeout_s=600, break_lease=True)
    try:
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "breaker"
        assert live.renew() is False and "breaker" in live.lost
    finally:
        live.release()
        breaker.release()
    assert not exists(OutputLayout(prefix).lease, options)


def test_the_holder_renews_its_lease_while_it_runs(tmp_path):
    prefix = str(tmp_path / "out")
    lease = acquire_lease(prefix, "run-1", LOCAL, timeout_s=0.4)
    try:
        first = json.loads(read_bytes(OutputLayout(prefix).lease))["renewed_at"]
        time.sleep(0.6)  # longer than its timeout: without renewal another run could take it now
        assert json.loads(read_bytes(OutputLayout(prefix).lease))["renewed_at"] > first
        with pytest.raises(LeaseHeld):
            acquire_lease(prefix, "run-2", LOCAL, timeout_s=0.4)
    finally:
        lease.release()


def test_a_holder_whose_lease_is_taken_over_is_told_once_by_its_renewal_thread(place):
    prefix, options = place
    told = []
    holder = acquire_lease(prefix, "holder", options, timeout_s=0.4, on_lost=told.append)
    breaker = acquire_lease(prefix, "breaker", options, timeout_s=60, break_lease=True)
    try:
        deadline = time.monotonic() + 10
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # more renewal intervals: still told only once
        assert len(told) == 1 and "breaker" in told[0] and holder.lost == told[0]
    finally:
        holder.release()
        breaker.release()


def test_a_file_that_is_not_a_lease_is_an_error_unless_broken(tmp_path):
    prefix = str(tmp_path / "out")
    write_bytes_atomic(OutputLayout(prefix).lease, b"not json")
    with pytest.raises(LeaseError, match="not a lease"):
        acquire_lease(prefix, "run-1", LOCAL, timeout_s=60)
    acquire_lease(prefix, "run-1", LOCAL, timeout_s=60, break_lease=True).release()


def test_an_output_prefix_that_is_a_file_is_a_lease_error(tmp_path):
    prefix = tmp_path / "file"
    prefix.write_text("x")
    with pytest.raises(LeaseError, match="cannot take the run lease"):
        acquire_lease(str(prefix), "run-1", LOCAL, timeout_s=60)


def test_a_lease_whose_holder_process_on_this_host_is_gone_is_taken_at_once(place):
    """A killed driver's re-run on the same machine need not wait out the timeout; a live holder still refuses."""
    prefix, options = place
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = _holder_on_this_machine("killed", dead.pid)
    write_bytes_atomic(OutputLayout(prefix).lease, holder.to_json(), options)
    lease = acquire_lease(prefix, "rerun", options, timeout_s=60)
    try:
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "rerun"
    finally:
        lease.release()
    unreaped = subprocess.Popen([sys.executable, "-c", "pass"])  # a zombie until waited for
    time.sleep(0.5)
    elsewhere = dataclasses.replace(_holder_on_this_machine("remote", unreaped.pid), host="another-host")
    write_bytes_atomic(OutputLayout(prefix).lease, elsewhere.to_json(), options)
    with pytest.raises(LeaseHeld):  # another host's processes cannot be seen from here
        acquire_lease(prefix, "rerun", options, timeout_s=60)
    zombie = LeaseHolder(**{**elsewhere.__dict__, "host": socket.gethostname(), "run_id": "zombie"})
    write_bytes_atomic(OutputLayout(prefix).lease, zombie.to_json(), options)
    acquire_lease(prefix, "rerun", options, timeout_s=60).release()
    unreaped.wait()


def _holder_on_this_machine(run_id: str, pid: int) -> LeaseHolder:
    """A holder as a run of this machine, boot and pid namespace writes it, for the process `pid`."""
    this = LeaseHolder.of_this_process(run_id, time.time(), 600.0)
    return dataclasses.replace(this, pid=pid, process_start=lease_module._start_time(pid))


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_holder_whose_pid_cannot_be_judged_from_here_keeps_its_lease():
    """Host networking gives containers one host name: a pid of another boot or pid namespace, even one that is free
    here, says nothing about the holder; a pid given to a new process since is a holder that is gone."""
    free_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    free_pid.wait()
    gone_here = _holder_on_this_machine("killed", free_pid.pid)
    assert gone_here.process_is_gone()
    assert not dataclasses.replace(gone_here, pid_namespace=gone_here.pid_namespace + 1).process_is_gone()
    assert not dataclasses.replace(gone_here, boot_id="another-boot").process_is_gone()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live_holder = _holder_on_this_machine("live", alive.pid)
        assert live_holder.process_start and not live_holder.process_is_gone()
        reused_pid = dataclasses.replace(live_holder, process_start=str(int(live_holder.process_start) - 1))
        assert reused_pid.process_is_gone()
    finally:
        alive.kill()
        alive.wait()


def test_an_older_lease_file_without_process_identity_is_read():
    old = {"run_id": "r", "host": "h", "pid": 1, "since": "then", "renewed_at": 1.0, "timeout_s": 60.0}
    holder = LeaseHolder.from_json(json.dumps(old).encode())
    assert holder.run_id == "r" and holder.boot_id == "" and not holder.process_is_gone()


def test_the_local_lease_leaves_nothing_behind_in_an_output_it_created(tmp_path):
    prefix = tmp_path / "out"
    acquire_lease(str(prefix), "run-1", LOCAL, timeout_s=60).release()
    assert not prefix.exists() and os.listdir(tmp_path) == []  # no lock file anywhere
    prefix.mkdir()
    lease = acquire_lease(str(prefix), "run-2", LOCAL, timeout_s=60)
    (prefix / "runs").mkdir()
    lease.release()
    assert os.listdir(prefix) == ["runs"]  # a folder that existed, or that the run wrote to, stays


class _AnswerLost:
    """A store whose writes land but whose answers are lost once, as when a response times out and a retry then
    fails its own condition."""

    def __init__(self, store):
        self.store = store
        self.lose_create = self.lose_replace = True

    def create(self, data):
        token = self.store.create(data)
        if self.lose_create:
            self.lose_create = False
            return None
        return token

    def replace(self, data, token):
        new_token = self.store.replace(data, token)
        if self.lose_replace and new_token is not None:
            self.lose_replace = False
            return None
        return new_token

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_write_that_landed_though_its_answer_was_lost_keeps_the_lease(place, monkeypatch):
    prefix, options = place
    real_store_for = lease_module._store_for
    monkeypatch.setattr(lease_module, "_store_for", lambda *args: _AnswerLost(real_store_for(*args)))
    told = []
    lease = acquire_lease(prefix, "run-1", options, timeout_s=600, on_lost=told.append)  # not "held by run-1"
    try:
        assert lease.renew() is True and lease.lost is None and not told  # the lost answer: still ours
        assert lease.renew() is True
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "run-1"
    finally:
        lease.release()
    assert not exists(OutputLayout(prefix).lease, options)  # released with the token of the last write


class _Stalling:
    """A store whose renewals hang until let go, as a store that stopped answering."""

    def __init__(self, store, hang_s: float):
        self.store, self.hang_s = store, hang_s
        self.replacing = threading.Event()

    def replace(self, data, token):
        self.replacing.set()
        time.sleep(self.hang_s)
        return self.store.replace(data, token)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_holder_whose_renewal_hangs_gives_the_lease_up_before_it_can_be_taken_over(tmp_path, monkeypatch):
    prefix = str(tmp_path / "out")
    real_store_for = lease_module._store_for
    monkeypatch.setattr(lease_module, "_store_for", lambda *args: _Stalling(real_store_for(*args), hang_s=5))
    told = []
    started = time.monotonic()
    lease = acquire_lease(prefix, "run-1", LOCAL, timeout_s=0.8, on_lost=told.append)
    try:
        while not told and time.monotonic() - started < 4:
            time.sleep(0.02)
        # Told within 3/4 of its timeout (plus a watchdog interval), while the renewal still hangs.
        assert told and "could not be renewed" in told[0]
        assert time.monotonic() - started < 0.8 + 0.3
    finally:
        lease._stop.set()


def test_release_waits_for_a_renewal_under_way_and_deletes_the_lease(tmp_path, monkeypatch):
    prefix = str(tmp_path / "out")
    real_store_for = lease_module._store_for
    stalling = []

    def store_for(*args):
        stalling.append(_Stalling(real_store_for(*args), hang_s=0.3))
        return stalling[-1]

    monkeypatch.setattr(lease_module, "_store_for", store_for)
    lease = acquire_lease(prefix, "run-1", LOCAL, timeout_s=0.4)
    assert stalling[0].replacing.wait(5)  # a renewal is under way
    lease.release()
    assert not exists(OutputLayout(prefix).lease) and lease.lost is None


def test_a_boto3_without_conditional_puts_is_named(monkeypatch, s3_server):
    import boto3

    real_client = boto3.client

    def old_client(*args, **kwargs):
        client = real_client(*args, **kwargs)
        members = dict(client.meta.service_model.operation_model("PutObject").input_shape.members)
        members.pop("IfMatch", None)
        members.pop("IfNoneMatch", None)
        shape = type("Shape", (), {"members": members})()
        model = type("Model", (), {"operation_model": lambda self, name: type("Op", (), {"input_shape": shape})()})()
        client.meta._service_model = model  # what an older botocore's model says
        return client

    prefix = s3_server.make_bucket() + "/out"
    monkeypatch.setattr(boto3, "client", old_client)
    with pytest.raises(LeaseError, match="boto3>=1.36") as raised:
        acquire_lease(prefix, "run-1", s3_server.options, timeout_s=60)
    assert not isinstance(raised.value, LeaseStorageError)  # a set-up to fix, not a storage failure


def test_a_store_that_cannot_be_reached_is_a_storage_error():
    options = StorageOptions(s3_endpoint_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(LeaseStorageError, match="cannot take the run lease"):
        acquire_lease("s3://bucket/out", "run-1", options, timeout_s=16)
