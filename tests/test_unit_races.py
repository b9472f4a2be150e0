"""The state machine in-process, where asyncio's scheduling makes races exact: a press that comes
together with a token is never lost (P8), whichever the event loop runs first."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from teacher_tools.keys import load_signing_key
from appliance.roster import TeacherCard
from appliance.token import mint
from appliance.unit import Result, State
from hwsim.invariants import check_all, device_intervals, led_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from tests.inprocess import sim_unit


def test_a_press_right_after_a_token_stops_the_recording_it_started(lab_template):
    files = lab_template.key_files("t-evans")
    key = load_signing_key(files.signing_key, PASSPHRASE)
    card = TeacherCard.parse(files.card.read_bytes())

    async def scenario(root: Path) -> tuple[Result, State, list[dict], list]:
        unit, hw, spool = sim_unit(lab_template, root)
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
