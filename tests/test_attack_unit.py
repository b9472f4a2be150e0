"""Faults and hostile peers against the unit's state machine (issue 13, items 8, 10, 13, 17):
a failure while finishing a recording does not wedge the unit; slow storage work stays off the
event loop and start-up does not read what waits for upload; the first reason a recording ended
is the one its manifest keeps; and another teacher's discard learns nothing (P8, P9).

Most tests run the state machine in-process on the simulator, where a fault can be injected at
an exact point; the discard test runs the real daemon and pad."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from appliance.config import load, parse
from appliance.daemon import serve
from appliance.keys import load_signing_key
from appliance.notice import Notices, Sound
from appliance.recordings import finish, recover_interrupted
from appliance.roster import Roster, TeacherCard
from appliance.token import mint
from appliance import unit as state_machine
from appliance.unit import State, Unit
from capture.manifest import MANIFEST_FILE, open_manifest, write_manifest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hwsim.factory import make_sim_hardware
from hwsim.invariants import check_all, device_intervals, led_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from led_indicator.patterns import Pattern
from tests.media import identity
from tests.test_systemd import _last
from uploader.durable import sha256_file
from uploader.spool import FileState, Spool

TEACHER = "t-evans"
NOTICES = Notices(*(Sound(label, b"\0\0" * 800, 16000)
                     for label in ("start", "stop", "discard", "full")))


# -- the in-process unit ------------------------------------------------------------------------

def _unit(lab_template, root: Path, spool: Spool | None = None) -> tuple[Unit, object, Spool]:
    config = parse({
        "device": {"id": DEVICE_ID, "roster_dir": str(lab_template.roster_dir),
                   "state_dir": str(root / "var")},
        "capture": {"width": 160, "height": 120, "segment_seconds": 1,
                    "x264_preset": "ultrafast", "min_free_mb": 1},
        "clock": {"synchronised": "yes"},
        "sim": {"realtime": False, "speed": 100.0}})
    hw = make_sim_hardware(config)
    spool = spool or Spool(root / "var" / "spool")
    unit = Unit(config, Roster(config.device.roster_dir), spool, hw,
                NOTICES, Ed25519PrivateKey.generate(), lambda: True)
    return unit, hw, spool


def _token(lab_template, unit: Unit, teacher: str = TEACHER, act: str = "start") -> str:
    files = lab_template.key_files(teacher)
    card = TeacherCard.parse(files.card.read_bytes())
    return mint(load_signing_key(files.signing_key, PASSPHRASE), teacher, DEVICE_ID,
                unit.challenge, card.recipient, action=act)


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _record_a_segment(lab_template, unit: Unit, spool: Spool) -> None:
    """Start a recording and wait until it has sealed a segment."""
    await unit.press()
    assert (await unit.present(_token(lab_template, unit))).ok
    await _until(lambda: unit.state is State.RECORDING)
    await _until(lambda: any(f.name.startswith("seg-") for f in spool.files()))


def _in_process(scenario: Callable[[Path], Awaitable[None]]) -> None:
    with tempfile.TemporaryDirectory(prefix="cc-") as root:
        asyncio.run(scenario(Path(root)))


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# -- item 13: the first reason a recording ended is the one its manifest keeps -------------------

@pytest.mark.parametrize("fault", ["led", "microphone_error"])
@pytest.mark.parametrize("late_stop", ["pad", "sigterm"])
def test_a_stop_while_a_fault_ends_the_recording_leaves_the_fault_in_the_manifest(
        lab_template, fault, late_stop):
    async def scenario(root: Path) -> None:
        unit, hw, spool = _unit(lab_template, root)
        loop = asyncio.get_running_loop()
        stops: list[asyncio.Future] = []
        trace = hw.trace

        def stop_while_stopping(event: str, **fields) -> None:
            trace(event, **fields)
            if event == "state" and fields["state"] == "stopping":
                # The stop lands while the fault is ending the session.
                stop = (unit.stop("stop from pad") if late_stop == "pad" else unit.shutdown())
                loop.call_soon(lambda: stops.append(asyncio.ensure_future(stop)))

        try:
            await _record_a_segment(lab_template, unit, spool)
            hw.trace = stop_while_stopping
            hw.parts.faults.set(fault)
            await _until(lambda: unit.state is State.IDLE and bool(stops))
            await asyncio.gather(*stops)
            events = list(hw.parts.timeline.events)
            (recording,) = spool.recordings()
            manifest = open_manifest((recording.path / MANIFEST_FILE).read_bytes(),
                                     identity(lab_template))
        finally:
            hw.parts.faults.set(fault, False)
            await unit.shutdown()
            spool.close()
            hw.close()
        component = "led" if fault == "led" else "capture"
        assert manifest.body["ended_by"].startswith(f"fault: {component}: ")
        # The stop did arrive while the session was ending, before the manifest was written.
        kinds = [(e["ev"], e.get("state") or e.get("why")) for e in events
                 if e["ev"] in ("state", "stop_requested", "manifest")]
        stopping = kinds.index(("state", "stopping"))
        asked = kinds.index(("stop_requested", "stop from pad" if late_stop == "pad"
                             else "shutting down"))
        assert stopping < asked < kinds.index(("manifest", None))

    _in_process(scenario)
