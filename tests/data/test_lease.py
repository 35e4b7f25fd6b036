"""The run lease: one holder at a time on local disk and on S3, renewal, take-over after the timeout, --break-lease."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from diffedit_batch.data.lease import LeaseError, LeaseHeld, LeaseHolder, acquire_lease
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
    holder = LeaseHolder(run_id="killed", host=socket.gethostname(), pid=dead.pid, since="then",
                         renewed_at=time.time(), timeout_s=600.0)
    write_bytes_atomic(OutputLayout(prefix).lease, holder.to_json(), options)
    lease = acquire_lease(prefix, "rerun", options, timeout_s=60)
    try:
        assert json.loads(read_bytes(OutputLayout(prefix).lease, options))["run_id"] == "rerun"
    finally:
        lease.release()
    unreaped = subprocess.Popen([sys.executable, "-c", "pass"])  # a zombie until waited for
    time.sleep(0.5)
    elsewhere = LeaseHolder(run_id="remote", host="another-host", pid=unreaped.pid, since="then",
                            renewed_at=time.time(), timeout_s=600.0)
    write_bytes_atomic(OutputLayout(prefix).lease, elsewhere.to_json(), options)
    with pytest.raises(LeaseHeld):  # another host's processes cannot be seen from here
        acquire_lease(prefix, "rerun", options, timeout_s=60)
    zombie = LeaseHolder(**{**elsewhere.__dict__, "host": socket.gethostname(), "run_id": "zombie"})
    write_bytes_atomic(OutputLayout(prefix).lease, zombie.to_json(), options)
    acquire_lease(prefix, "rerun", options, timeout_s=60).release()
    unreaped.wait()


def test_the_local_lease_leaves_nothing_behind_in_an_output_it_created(tmp_path):
    prefix = tmp_path / "out"
    acquire_lease(str(prefix), "run-1", LOCAL, timeout_s=60).release()
    assert not prefix.exists() and os.listdir(tmp_path) == []  # no lock file anywhere
    prefix.mkdir()
    lease = acquire_lease(str(prefix), "run-2", LOCAL, timeout_s=60)
    (prefix / "runs").mkdir()
    lease.release()
    assert os.listdir(prefix) == ["runs"]  # a folder that existed, or that the run wrote to, stays
