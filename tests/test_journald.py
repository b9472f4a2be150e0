"""The daemon under systemd's eyes: sd_notify over a real NOTIFY_SOCKET, and structured journal
entries through systemd-python into a stand-in journald (tests/journald_sink.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from hwsim.lab import RunningUnit
from tests.health_lab import timed_daemon, wait_until
from tests.padclient import PadClient

PERIOD = 0.5


class NotifySocket:
    """A NOTIFY_SOCKET as systemd makes one: a datagram socket; keeps (time, message)."""

    def __init__(self, path):
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def test_ready_status_and_watchdog_in_order_and_no_watchdog_while_the_loop_is_blocked(
        lab, short_dir):
    notify = NotifySocket(short_dir / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"}
    try:
        with timed_daemon(lab, env) as (unit, _):
            wait_until(lambda: sum(m == "WATCHDOG=1" for _, m in notify.messages) >= 5, 10,
                       "no watchdog pings")
            asked = time.monotonic()
            unit.control("block_loop", seconds=1.5)
            answered = time.monotonic()
            wait_until(lambda: any(t > answered and m == "WATCHDOG=1"
                                   for t, m in notify.messages), 5, "pings did not resume")
            time.sleep(3 * PERIOD)
        kinds = [m.split("=", 1)[0] for _, m in notify.messages]
        first = [k for i, k in enumerate(kinds) if k not in kinds[:i]]
        assert first[:3] == ["READY", "STATUS", "WATCHDOG"], kinds[:10]
        assert kinds[-1] == "STOPPING" or "STOPPING" in kinds
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
        before = [t for t in pings if t < asked]
        gaps = [b - a for a, b in zip(before, before[1:])]
        assert max(gaps) < 0.4, gaps  # every 0.15 s while the loop runs
        blocked = [t for t in pings if asked + 0.3 < t < answered - 0.1]
        assert blocked == [], "the watchdog was pinged while the event loop was blocked"
        # STATUS= says device health only, on the health period after start-up.
        statuses = [(t, m) for t, m in notify.messages if m.startswith("STATUS=")]
        assert all(m in ("STATUS=health: ok", f"STATUS=running; health every {PERIOD:g} s")
                   or m.startswith("STATUS=health: fault: ") for _, m in statuses), statuses
        ticks = [t for t, m in statuses[1:] if not (asked < t < answered + 0.1)]
        assert len(ticks) >= 4
    finally:
        notify.close()


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --mount for a private "
                                               "/run/systemd")
def test_under_systemd_lines_are_journal_entries_with_fields_released_on_the_tick(lab,
                                                                                    short_dir):
    period = 2.0
    lab.settings["health"] = {"period_s": period}
    lab.write_config()
    out = short_dir / "journal.jsonl"

    def entries() -> list[dict]:
        return [json.loads(l) for l in out.read_text().splitlines()] if out.exists() else []

    def refused(pin: str = "000000") -> None:
        if unit.state() != "armed":
            unit.control("press")
            unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin=pin)["result"]["ok"] is False

    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
         "tests.journald_sink", str(out), "--", sys.executable, "-m", "appliance.cli", "run",
         "--hw", "sim", "--config", str(lab.config_path)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    unit = RunningUnit(lab, proc)
    try:
        unit.connect(30)
        # A first line, to see when a tick is.
        unit.control("press")
        unit.wait_state("armed")
        pad = PadClient(lab.pad_socket)
        pad.send({"type": "token", "token": "not.a.token"})
        pad.receive("result")
        tick = wait_until(lambda: [e["_t"] for e in entries()
                                   if e["CLASSCAM_EVENT"] == "token-refused"], 10,
                          "no token-refused entry")[0]
        # Two events well apart, both inside the next period ...
        time.sleep(max(0.0, tick + 0.3 - time.monotonic()))
        pad.send({"type": "token", "token": "still.not.a.token"})
        pad.receive("result")
        pad.close()
        time.sleep(0.3)
        unit.control("press")             # disarm
        unit.wait_state("idle")
        unit.control("fault", name="speaker", on=True)
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")   # the notice cannot play
        unit.wait_state("idle")
        assert time.monotonic() < tick + period - 0.2, "too slow to stay inside one period"
        wait_until(lambda: any(e["CLASSCAM_EVENT"] == "fault" for e in entries()), 10,
                   "no fault entry")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    got = entries()
    assert out.with_suffix(".stderr").read_bytes() == b""  # everything went to the journal
    ready = next(e for e in got if e["CLASSCAM_EVENT"] == "ready")
    assert ready["PRIORITY"] == "6" and ready["SYSLOG_IDENTIFIER"] == "classcam"
    fault = next(e for e in got if e["CLASSCAM_EVENT"] == "fault")
    assert fault["MESSAGE"] == "appliance.unit: fault: speaker: speaker: simulated amplifier failure"
    assert fault["PRIORITY"] == "3"
    assert fault["CODE_FILE"].endswith("appliance/unit.py") and int(fault["CODE_LINE"]) > 0
    assert fault["CODE_FUNC"] == "_set_fault"
    for entry in got:
        assert set(entry) <= {"MESSAGE", "PRIORITY", "CLASSCAM_EVENT", "CODE_FILE", "CODE_LINE",
                              "CODE_FUNC", "SYSLOG_IDENTIFIER", "_t"}, entry
    # ... are written together, on the tick after them: not when the teacher was at the unit.
    events = lab.timeline()
    refused_at = [e["t"] for e in events if e["ev"] == "token" and not e["ok"]][-1]
    failed_at = next(e["t"] for e in events if e["ev"] == "fault")
    second = [e for e in got if e["CLASSCAM_EVENT"] == "token-refused"][-1]
    assert failed_at - refused_at > 0.25
    assert abs(second["_t"] - fault["_t"]) < 0.05 and second["_t"] > failed_at
    assert abs(fault["_t"] - (tick + period)) < 0.15, (fault["_t"] - tick)
