"""Issue 13, items 6 and 7: no pad, serial or socket, broken or hostile, holds up the unit.

The "USB pad" is a real pseudo-terminal: the daemon opens its slave through a symlink at the
configured path, the test plays the pad on the master end. The socket tests use real Unix socket
clients. Every test reads its verdict off the timeline, the status the simulator reports, or the
journal.
"""
from __future__ import annotations

import json
import os
import socket
import time
import tty
from pathlib import Path

from appliance.padlink import MAX_CLIENTS
from hwsim.control import ControlClient
from hwsim.invariants import check_all, device_intervals, led_intervals
from tests.padclient import PadClient, teacher_token

BOUND_S = 10.0  # a stop is acted on within this, whatever a pad does


class Pty:
    """A pseudo-terminal standing in for a USB pad, reached through a symlink like /dev/ttyACM0."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)

    def plug_in(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        os.replace(tmp, path)

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def fill_towards_pad(self) -> None:
        """Fill what the unit writes to until not a byte more fits, as if the pad had not read
        for a long time."""
        os.set_blocking(self.slave, False)
        try:
            while True:
                os.write(self.slave, b"\n")
        except BlockingIOError:
            pass

    def send(self, raw: bytes) -> None:
        os.write(self.master, raw)

    def readline(self, timeout: float = 5.0) -> dict:
        buffer = b""
        deadline = time.monotonic() + timeout
        while not buffer.endswith(b"\n"):
            assert time.monotonic() < deadline, f"no line from the unit (got {buffer!r})"
            try:
                buffer += os.read(self.master, 1)
            except BlockingIOError:
                time.sleep(0.005)
        return json.loads(buffer)

    def stuff(self, line: bytes, stuck_for: float = 1.0, limit_s: float = 30.0) -> int:
        """Write `line` over and over, never reading, until the unit has taken nothing for
        `stuck_for` seconds; returns how many lines went in."""
        sent, stuck_since, deadline = 0, None, time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                os.write(self.master, line)
                sent, stuck_since = sent + 1, None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since >= stuck_for:
                    return sent
                time.sleep(0.01)
        raise AssertionError(f"the unit kept reading {sent} lines it could not answer")


def _wait(condition, timeout: float = BOUND_S, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _pad_fault_lines(journal: str) -> list[str]:
    return [line for line in journal.splitlines() if "fault: pad:" in line]


def _serial_lab(lab, path: Path, **pad) -> None:
    lab.settings["pad"] = {"serial": str(path), **pad}
    lab.write_config()


# -- item 6: the serial pad -----------------------------------------------------------------

def test_a_serial_pad_that_stops_reading_does_not_hold_up_a_stop(lab):
    path, pad = lab.root / "ttyPAD", Pty()
    pad.plug_in(path)
    _serial_lab(lab, path, write_timeout_s=1.0)
    with lab.daemon() as unit:
        pad.send(b'{"type":"stop"}\n')
        assert pad.readline()["reason"] == "stopped"  # the serial link is up
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("recording")

        # The pad stops reading and keeps talking: the unit's answers fill the terminal, then
        # the unit cannot take another line.
        pad.stuff(b"not a message " * 4 + b"\n")

        button = ControlClient(lab.control_socket, timeout=BOUND_S)
        pressed_at = time.monotonic()
        assert button("press")["ok"]
        _wait(lambda: button("status")["state"] == "idle", what="the stop to be acted on")
        button.close()
        lit = led_intervals(lab.timeline())
        assert len(lit) == 1 and pressed_at < lit[0][1] < pressed_at + BOUND_S
        # It was a real wedge: the unit noticed that the pad took nothing.
        _wait(lambda: _pad_fault_lines(lab.journal()), what="the pad fault in the journal")
        assert "not reading" in _pad_fault_lines(lab.journal())[0]
        assert unit.terminate(timeout=BOUND_S) == 0  # and SIGTERM is acted on
    pad.unplug()
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []
    assert "Traceback" not in lab.journal() and "t-evans" not in lab.journal()


def test_a_serial_pad_with_a_full_link_does_not_hold_up_the_button(lab):
    path, pad = lab.root / "ttyPAD", Pty()
    pad.plug_in(path)
    _serial_lab(lab, path)
    with lab.daemon() as unit:
        pad.send(b'{"type":"stop"}\n')
        assert pad.readline()["reason"] == "stopped"  # the serial link is up
        pad.fill_towards_pad()  # the pad stopped reading long ago: not a byte more fits

        button = ControlClient(lab.control_socket, timeout=BOUND_S)
        assert button("press")["ok"]  # arming sends the pad a challenge it cannot take
        _wait(lambda: button("status")["state"] == "armed", what="the unit to arm")
        assert button("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        _wait(lambda: button("status")["state"] == "recording", what="the recording")
        pressed_at = time.monotonic()
        assert button("press")["ok"]
        _wait(lambda: button("status")["state"] == "idle", what="the stop to be acted on")
        button.close()
        lit = led_intervals(lab.timeline())
        assert len(lit) == 1 and pressed_at < lit[0][1] < pressed_at + BOUND_S
        assert unit.terminate(timeout=BOUND_S) == 0  # and SIGTERM is acted on
    pad.unplug()
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []


def test_a_serial_pad_absent_at_boot_is_a_fault_until_it_is_plugged_in(lab):
    path = lab.root / "ttyPAD"  # nothing there yet
    _serial_lab(lab, path)
    with lab.daemon() as unit:  # comes up all the same: control socket and pad socket served
        _wait(lambda: unit.control("status")["fault"] == "pad", what="a pad fault")
        assert unit.control("status")["light"] == "fault"
        unit.control("press")  # the button works
        unit.wait_state("armed")
        unit.control("press")
        unit.wait_state("idle")
        time.sleep(2.5)  # several more tries to open the device: still one journal line
        _wait(lambda: _pad_fault_lines(lab.journal()), what="the pad fault in the journal")
        lines = _pad_fault_lines(lab.journal())
        assert len(lines) == 1 and "cannot open" in lines[0] and str(path) in lines[0]

        pad = Pty()
        pad.plug_in(path)
        _wait(lambda: unit.control("status")["fault"] is None, what="the fault to clear")
        assert unit.control("status")["light"] == "idle"
        pad.send(b'{"type":"arm"}\n')
        assert pad.readline()["type"] == "challenge"
        unit.wait_state("armed")
    pad.unplug()
    journal = lab.journal()
    assert len(_pad_fault_lines(journal)) == 1 and "fault cleared: pad" in journal
    assert "Traceback" not in journal


def test_a_serial_pad_that_fails_is_a_fault_and_is_used_again_when_it_is_back(lab):
    path, pad = lab.root / "ttyPAD", Pty()
    pad.plug_in(path)
    _serial_lab(lab, path)
    with lab.daemon() as unit:
        pad.send(b'{"type":"stop"}\n')
        assert pad.readline()["reason"] == "stopped"
        pad.unplug()  # reads on the unit's end now fail
        _wait(lambda: unit.control("status")["fault"] == "pad", what="a pad fault")
        assert unit.control("status")["light"] == "fault"
        # Journal lines wait for the health tick (P9): wait for it, then there is exactly one.
        _wait(lambda: _pad_fault_lines(lab.journal()), what="the pad fault in the journal")
        assert len(_pad_fault_lines(lab.journal())) == 1

        pad = Pty()
        pad.plug_in(path)
        _wait(lambda: unit.control("status")["fault"] is None, what="the fault to clear")
        pad.send(b'{"type":"arm"}\n')
        challenge = pad.readline()
        pad.send(json.dumps({"type": "token", "token": teacher_token(
            lab, "t-evans", challenge["nonce"])}).encode() + b"\n")
        assert pad.readline() == {"type": "result", "ok": True, "reason": "recording"}
        unit.wait_state("recording")
        pad.send(b'{"type":"stop"}\n')
        assert pad.readline()["reason"] == "stopped"
        unit.wait_state("idle")
    pad.unplug()
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []
    assert "Traceback" not in lab.journal() and "t-evans" not in lab.journal()


# -- item 7: the socket -------------------------------------------------------------------

def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return s


def test_stale_connections_never_lock_the_pad_out(lab):
    with lab.daemon() as unit:
        silent = [_connect(lab.pad_socket) for _ in range(MAX_CLIENTS)]
        partial = [_connect(lab.pad_socket) for _ in range(MAX_CLIENTS)]
        for s in partial:
            s.sendall(b'{"type":"ar')
        pad = PadClient(lab.pad_socket)
        for s in partial:  # still sending, slowly
            s.sendall(b"m")
        pad.send({"type": "arm"})
        challenge = pad.receive("challenge")
        assert pad.token(teacher_token(lab, "t-evans", challenge["nonce"]))["ok"]
        unit.wait_state("recording")
        pad.send({"type": "stop"})
        assert pad.receive("result")["reason"] == "stopped"
        unit.wait_state("idle")
        pad.close()
        # The simulated pad, pushed out too, reconnected and still works.
        assert unit.lesson("t-evans", seconds=0.1)["ok"]
        for s in silent + partial:
            s.close()
    events = lab.timeline()
    assert len(device_intervals(events)) == 4 and check_all(events) == []
    assert "t-evans" not in lab.journal()


def test_a_line_left_unfinished_and_a_silent_connection_are_closed(lab):
    lab.settings["pad"] = {"line_timeout_s": 1.0, "idle_timeout_s": 3.0}
    lab.write_config()
    with lab.daemon() as unit:
        silent = _connect(lab.pad_socket)
        connected_at = time.monotonic()
        slow = _connect(lab.pad_socket)
        slow.settimeout(0.2)
        slow.sendall(b'{"type"')
        started_at = time.monotonic()
        while time.monotonic() < started_at + BOUND_S:
            try:
                slow.sendall(b" ")  # a byte at a time, never a newline
                if slow.recv(100) == b"":
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            raise AssertionError("a line left unfinished kept its connection")
        assert time.monotonic() - started_at < 1.0 + 2.0

        assert silent.recv(100) == b""  # closed by the unit (the socket's timeout is 5 s)
        assert 3.0 - 0.5 < time.monotonic() - connected_at < 3.0 + 2.0
        # The simulated pad, connected before and as silent, was closed too: it reconnected.
        assert unit.lesson("t-evans", seconds=0.1)["ok"]
        slow.close()
        silent.close()
    journal = lab.journal()
    assert "a line not finished within 1 s" in journal
    assert "t-evans" not in journal and "Traceback" not in journal
