"""The state machine in-process, where asyncio's scheduling makes races exact: a press that comes
together with a token is never lost (P8), whichever the event loop runs first."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from appliance.config import parse
from teacher_tools.keys import load_signing_key
from appliance.notice import Notices, Sound
from appliance.roster import Roster, TeacherCard
from appliance.token import mint
from appliance.unit import Result, State, Unit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hwsim.factory import make_sim_hardware
from hwsim.invariants import check_all, device_intervals, led_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from uploader.spool import Spool


def _unit(lab_template, root: Path):
    config = parse({
        "device": {"id": DEVICE_ID, "roster_dir": str(lab_template.roster_dir),
                   "state_dir": str(root / "var")},
        "capture": {"width": 160, "height": 120, "segment_seconds": 1,
                    "x264_preset": "ultrafast", "min_free_mb": 1},
        "clock": {"synchronised": "yes"},
        "sim": {"realtime": False, "speed": 100.0}})
    hw = make_sim_hardware(config)
    beep = Sound("notice", b"\0\0" * 800, 16000)
    notices = Notices(beep, beep, beep, beep)
    spool = Spool(root / "var" / "spool")
    unit = Unit(config, Roster(config.device.roster_dir), spool, hw, notices,
                Ed25519PrivateKey.generate(), lambda: True)
    return unit, hw, spool


def test_a_press_right_after_a_token_stops_the_recording_it_started(lab_template):
    files = lab_template.key_files("t-evans")
    key = load_signing_key(files.signing_key, PASSPHRASE)
    card = TeacherCard.parse(files.card.read_bytes())

    async def scenario(root: Path) -> tuple[Result, State, list[dict], list]:
        unit, hw, spool = _unit(lab_template, root)
        try:
            await unit.press()
            token = mint(key, "t-evans", DEVICE_ID, unit.challenge, card.recipient)
            # The token and a second press arrive together; the loop runs them in this order.
            accepted, _ = await asyncio.gather(unit.present(token), unit.press())
            # A stop returns once the LED is off (P8): no waiting for the unit to settle.
            return accepted, unit.state, list(hw.parts.timeline.events), spool.recordings()
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()

    with tempfile.TemporaryDirectory(prefix="cc-") as root:
        accepted, state, events, left = asyncio.run(scenario(Path(root)))
    # The token started a recording session: accepted, then the LED lit for it...
    assert accepted == Result(True, "recording")
    token = next(i for i, e in enumerate(events) if e["ev"] == "token")
    assert events[token]["ok"] is True
    # ...and the press that came with it was taken as a stop of that session, not lost.
    presses = [e for e in events[token:] if e["ev"] == "press"]
    assert [p["state"] for p in presses] == ["starting"]
    assert [e["why"] for e in events if e["ev"] == "stop_requested"] == ["stop pressed"]
    (on, off), = led_intervals(events)
    assert events[token]["t"] < on < off < float("inf")
    # Nothing is left recording, and nothing was captured, so nothing is kept.
    assert state is State.IDLE
    assert all(closed != float("inf") for _, _, closed in device_intervals(events))
    assert left == []
    assert check_all(events) == []
