"""Hardware faults: each gets a line in the journal, the fault light, and no capture that breaks
P2 or P3."""
from __future__ import annotations

import time

from hwsim.invariants import check_all, device_intervals, led_intervals
from led_indicator.patterns import MAGENTA, OFF, Colour
from tests.media import spool_contents


def _start(unit):
    unit.control("press")
    unit.wait_state("armed")
    return unit.control("pin", teacher="t-evans", pin="432187")["result"]


STATUS_PINS = ("status_red", "status_green", "status_blue")
BURST_S = 0.02  # gpiozero sets an RGB LED's three pins one after another, microseconds apart


def _status_colours(events: list[dict]) -> list[tuple[int, Colour]]:
    """The status LED's colour after each change, as (index in `events` of the change's last pin
    event, (red, green, blue)). Pin events closer than `BURST_S` are one change of colour, so
    the halfway colours between two pins being set do not count."""
    level = dict.fromkeys(STATUS_PINS, 0.0)
    colours: list[tuple[int, Colour]] = []
    last_t = None
    for i, e in enumerate(events):
        if e["ev"] != "pin" or e["name"] not in STATUS_PINS:
            continue
        level[e["name"]] = e["value"]
        colour = tuple(level[name] for name in STATUS_PINS)
        if last_t is not None and e["t"] - last_t < BURST_S:
            colours[-1] = (i, colour)
        else:
            colours.append((i, colour))
        last_t = e["t"]
    return colours


def _wait_for(condition, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def test_led_that_cannot_be_lit_means_no_capture(unit, lab):
    unit.control("fault", name="led", on=True)
    _start(unit)
    unit.wait_state("idle")
    status = unit.control("status")
    assert status["fault"] == "led" and status["open"] == []
    events = lab.timeline()
    assert device_intervals(events) == []
    assert not any(e["ev"] == "notice" and e["label"] == "start" for e in events)
    unit.wait_journal("fault: led: recording LED cannot be driven")
    # The status light blinks magenta (red and blue together, never green) for a fault: from
    # here on it shows only magenta and dark, switching between them.
    def two_blinks() -> list[Colour] | None:
        colours = [c for i, c in _status_colours(lab.timeline()) if i >= len(events)]
        return colours if len(colours) >= 4 else None
    seen = _wait_for(two_blinks, 5.0, "the status light to blink twice")
    assert set(seen) == {MAGENTA, OFF}, seen
    assert all(a != b for a, b in zip(seen, seen[1:])), seen  # each change is a blink


def test_led_failing_mid_recording_stops_capture(unit, lab):
    _start(unit)
    unit.wait_state("recording")
    failed_at = time.monotonic()
    unit.control("fault", name="led", on=True)
    unit.wait_state("idle", timeout=5)
    events = lab.timeline()
    closes = [c for _, _, c in device_intervals(events)]
    assert len(closes) == 2 and all(failed_at < c < failed_at + 1.0 for c in closes)
    assert unit.control("status")["fault"] == "led"


def test_speaker_that_cannot_play_means_no_capture(unit, lab):
    unit.control("fault", name="speaker", on=True)
    _start(unit)
    unit.wait_state("idle")
    events = lab.timeline()
    assert device_intervals(events) == []
    (on, off), = led_intervals(events)  # lit for the attempt, dark again
    assert off > on
    assert unit.control("status")["fault"] == "speaker"
    unit.wait_journal("fault: speaker:")
    # Once the speaker works again, so does the unit.
    unit.control("fault", name="speaker", on=False)
    assert unit.lesson("t-evans", seconds=0.1)["ok"]
    assert check_all(lab.timeline()) == []


def test_camera_that_fails_to_open_is_closed_and_the_led_follows(unit, lab):
    unit.control("fault", name="camera", on=True)
    _start(unit)
    unit.wait_state("idle")
    events = lab.timeline()
    assert [d for d, _, _ in device_intervals(events)] == ["camera"]
    assert check_all(events) == []
    assert unit.control("status")["fault"] == "capture"
    assert spool_contents(lab) == []  # no empty recording left behind


def test_device_that_will_not_close_keeps_the_led_lit(unit, lab):
    _start(unit)
    unit.wait_state("recording")
    unit.control("fault", name="camera_close", on=True)
    unit.control("press")
    unit.wait_state("idle")
    status = unit.control("status")
    assert status["open"] == ["camera"] and status["recording_led"] is True
    assert check_all(lab.timeline()) == []  # the camera is still open, so the LED is too
    unit.wait_journal("could not close camera")
