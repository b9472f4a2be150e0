"""The pad link over a serial device (a USB PIN pad), tested on a pseudo-terminal pair."""
from __future__ import annotations

import json
import os
import time
import tty

from hwsim.invariants import check_all, device_intervals
from tests.padclient import teacher_token


def _readline(fd: int, timeout: float = 5.0) -> dict:
    buffer = b""
    deadline = time.monotonic() + timeout
    while not buffer.endswith(b"\n"):
        assert time.monotonic() < deadline, f"no line from the unit (got {buffer!r})"
        try:
            buffer += os.read(fd, 1)
        except BlockingIOError:
            time.sleep(0.005)
    return json.loads(buffer)


def test_serial_pad_arms_starts_and_survives_junk(lab):
    pad_fd, unit_fd = os.openpty()
    tty.setraw(pad_fd)
    tty.setraw(unit_fd)
    os.set_blocking(pad_fd, False)
    lab.settings["pad"] = {"serial": os.ttyname(unit_fd)}
    lab.write_config()
    with lab.daemon() as unit:
        os.write(pad_fd, b"\xff\xfe not json\n" + b"y" * 9000 + b"\n")
        assert _readline(pad_fd)["reason"].startswith("malformed message")
        assert _readline(pad_fd)["reason"] == "malformed message: line too long"
        os.write(pad_fd, b'{"type":"arm"}\n')
        challenge = _readline(pad_fd)
        assert challenge["type"] == "challenge" and challenge["expires_in"] == 60
        os.write(pad_fd, json.dumps({"type": "token", "token": teacher_token(
            lab, "t-evans", challenge["nonce"])}).encode() + b"\n")
        assert _readline(pad_fd) == {"type": "result", "ok": True, "reason": "recording"}
        unit.wait_state("recording")
        os.write(pad_fd, b'{"type":"stop"}\n')
        assert _readline(pad_fd)["reason"] == "stopped"
        unit.wait_state("idle")
    os.close(pad_fd)
    os.close(unit_fd)
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []
