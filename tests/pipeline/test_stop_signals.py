"""The run's signal handling without a run: SIGINT and SIGTERM stop the work, and are only noted once it winds down."""

from __future__ import annotations

import _thread
import os
import signal
import time

import pytest

from diffedit_batch.pipeline.driver import Interrupted, _StopSignals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_work_while_armed_and_is_noted_after(signum):
    before = {s: signal.getsignal(s) for s in _StopSignals.SIGNALS}
    stop = _StopSignals()
    with stop.installed():
        with pytest.raises(Interrupted, match=signal.Signals(signum).name):
            os.kill(os.getpid(), signum)
            time.sleep(1)  # the handler runs in the main thread at the next bytecode
        stop.armed = False  # winding down: the clean-up must finish
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        assert stop.deferred == signal.Signals(signum).name
    assert {s: signal.getsignal(s) for s in _StopSignals.SIGNALS} == before


def test_a_lost_lease_stops_the_run_even_where_sigint_was_ignored():
    """`interrupt_main` does nothing where SIGINT is ignored (a job started in the background): the run's own
    handler makes it stop the work all the same."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = _StopSignals()
        with stop.installed():
            with pytest.raises(Interrupted):
                _thread.interrupt_main(signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
