"""The lab itself must not hide a daemon that died: a test that used a daemon passes only if that
daemon was still running when the test ended and exited with 0 on SIGTERM (P8), unless the test
killed it on purpose (a power cut)."""
from __future__ import annotations

import os
import signal

import pytest

from hwsim.lab import DaemonExitError


def test_a_daemon_that_died_during_the_test_fails_it_with_its_log_tail(lab):
    with pytest.raises(DaemonExitError) as e:
        with lab.daemon() as unit:
            unit.control("press")
            unit.wait_state("armed")
            os.kill(unit.proc.pid, signal.SIGSEGV)  # a crash, not the test's own unit.kill()
            unit.proc.wait(10)
    message = str(e.value)
    assert message.splitlines()[0] == (
        "the daemon exited by itself, with status -11 (killed by SIGSEGV); the end of its log:")
    # Its log's last 30 lines; "(nothing)" when it wrote none (lines wait for the health tick,
    # P9, so a daemon killed early may have written nothing yet).
    assert message.splitlines()[1:] == (lab.journal().splitlines()[-30:] or ["(nothing)"])


def test_a_daemon_the_test_killed_on_purpose_or_that_stopped_cleanly_passes(lab):
    with lab.daemon() as unit:
        unit.kill()
    with lab.daemon() as unit:
        assert unit.terminate() == 0
    with lab.daemon():
        pass
