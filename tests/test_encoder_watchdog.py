"""A camera whose close never returns (a wedged driver, simulated) ends in a fault and a restart
by systemd's watchdog, never in a unit stuck for ever: the close is bounded, the recording LED
stays lit while the camera may be open (P2), and the daemon stops pinging the watchdog. Read
from a real NOTIFY_SOCKET datagram stream, as systemd would."""
from __future__ import annotations

import time

import pytest

from hwsim.invariants import check_all
from tests.test_attack_upload_watchdog import daemon_under_watchdog, watchdog_pings

WATCHDOG_USEC = 400_000  # pings every 0.2 s while healthy


@pytest.mark.parametrize("encoder", ["libx264", "picamera2"])
def test_a_camera_close_that_hangs_is_a_fault_and_the_watchdog_stops_being_fed(
        lab, short_dir, encoder):
    lab.settings["sim"] = {"encoder": encoder}
    lab.settings["capture"] = {"stall_timeout_s": 0.5}  # also the bound on a close
    lab.write_config()
    notify = short_dir / "notify.sock"
    with watchdog_pings(notify) as pings, daemon_under_watchdog(lab, notify, WATCHDOG_USEC) as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        healthy_pings = len(pings)
        assert healthy_pings > 0, "the watchdog was not fed while all was well"
        unit.control("fault", name="camera_close_hang", on=True)
        unit.control("press")
        unit.wait_state("idle", timeout=15)  # the close gave up: not stuck in `stopping`
        status = unit.control("status")
        assert status["fault"] == "capture"
        assert status["open"] == ["camera"] and status["recording_led"] is True  # P2
        unit.wait_journal("could not close camera")
        idle = time.monotonic()
        time.sleep(5 * WATCHDOG_USEC / 1e6)  # what systemd would wait before restarting it
        assert [t for t in pings if t > idle] == [], "the watchdog is still fed"
        # The driver lets go at last: the camera closes, and only then may the LED go dark.
        unit.control("fault", name="camera_close_hang", on=False)
        deadline = time.monotonic() + 5
        while not any(e["ev"] == "device" and e["phase"] == "close" and e["device"] == "camera"
                      for e in lab.timeline()):
            assert time.monotonic() < deadline, "the camera's late close did not finish"
            time.sleep(0.05)
    assert check_all(lab.timeline()) == []
