"""The keypad's bookmark (*) and pause (Num Lock) keys, through the real pad service to the real
daemon: a bookmark lands in the encrypted manifest at the moment it was pressed, and a pause
closes the devices and darkens the LED; neither needs a PIN, and neither does anything unless
the unit is recording."""
from __future__ import annotations

import time

from evdev import InputEvent, ecodes

from formats.manifest import MANIFEST_FILE, open_manifest
from hwsim.invariants import check_all, device_intervals
from pinpad.keypad import Key, key_of
from tests.media import identity, recording_dirs


def test_the_keymap_has_a_bookmark_and_a_pause_key():
    assert key_of(InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_KPASTERISK, 1)) is Key.MARK
    assert key_of(InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_NUMLOCK, 1)) is Key.PAUSE


def _wait_for(lab, ev: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in lab.timeline() if e["ev"] == ev]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {ev!r} on the timeline")


def test_the_bookmark_and_pause_keys_reach_the_unit(unit, lab):
    unit.control("pad_mark")  # idle: the unit refuses it, nothing is kept
    unit.control("press")
    unit.wait_state("armed")
    assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
    unit.wait_state("recording")
    time.sleep(0.5)
    unit.control("pad_mark")
    marked = _wait_for(lab, "bookmark")
    unit.control("pad_pause")
    unit.wait_state("paused")
    assert unit.control("status")["open"] == []
    unit.control("press")  # while paused: arms a resume; a stop ends it instead
    unit.control("pin", teacher="t-evans", pin="432187")
    unit.wait_state("recording")
    unit.control("press")
    unit.wait_state("idle")
    events = lab.timeline()
    assert check_all(events) == []
    assert len(device_intervals(events)) == 4  # camera and microphone, before and after
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert manifest.bookmarks == [marked["seconds"]]
    assert len(manifest.pauses) == 1
