"""Pause and resume: the pad's `pause` closes camera and microphone through the guard (the
recording LED is dark exactly while paused), the room hears it, and only the same teacher's
fresh token resumes, after the notice, into the same recording. `classcam decrypt` joins the
pieces into one lesson with its chapters at the marked times."""
from __future__ import annotations

import json
import subprocess
import time

import av
import pytest

from appliance.padlink import MalformedMessage, parse_message
from formats.manifest import MANIFEST_FILE, open_manifest
from hwsim.capture import read_counter
from hwsim.invariants import check_all, device_intervals, led_intervals
from teacher_tools.decrypt import decrypt_recording
from tests.media import identity, recording_dirs
from tests.padclient import PadClient, teacher_token

FPS = 25


def _pause(pad: PadClient, unit) -> None:
    pad.send({"type": "pause"})
    assert pad.receive("result") == {"type": "result", "ok": True, "reason": "pausing"}
    unit.wait_state("paused")


def _resume(unit, teacher: str = "t-evans", pin: str = "432187") -> dict:
    unit.control("press")  # the record button while paused arms a resume
    result = unit.control("pin", teacher=teacher, pin=pin)["result"]
    return {k: result[k] for k in ("ok", "reason")}


def _paused_intervals(events: list[dict]) -> list[tuple[float, float]]:
    """(paused, left paused) times from the unit's state changes."""
    out, since = [], None
    for e in events:
        if e["ev"] == "state":
            if e["state"] == "paused":
                since = e["t"]
            elif since is not None:
                out.append((since, e["t"]))
                since = None
    return out


def _start(unit) -> None:
    unit.control("press")
    unit.wait_state("armed")
    assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
    unit.wait_state("recording")


def test_no_device_is_open_and_the_led_is_dark_exactly_while_paused(unit, lab):
    pad = PadClient(lab.pad_socket)
    try:
        _start(unit)
        time.sleep(0.5)
        _pause(pad, unit)
        time.sleep(0.5)
        assert _resume(unit) == {"ok": True, "reason": "recording"}
        unit.wait_state("recording")
        time.sleep(0.5)
        unit.control("press")
        unit.wait_state("idle")
    finally:
        pad.close()
    events = lab.timeline()
    assert check_all(events) == []
    ((paused, resumed),) = _paused_intervals(events)
    opens = device_intervals(events)
    assert len(opens) == 4  # camera and microphone, before and after the pause
    for _, opened, closed in opens:
        assert closed < paused or opened > resumed
    lit = led_intervals(events)
    assert len(lit) == 2
    # Dark from the last close before the pause to the first open after it, and not longer.
    assert lit[0][1] <= paused and lit[1][0] >= resumed
    last_close = max(c for _, o, c in opens if c < paused)
    first_open = min(o for _, o, c in opens if o > resumed)
    assert last_close <= lit[0][1] < paused and resumed <= lit[1][0] < first_open
    labels = [e["label"] for e in events if e["ev"] == "notice" and e["phase"] == "end"]
    assert labels == ["start", "paused", "start", "stop"]


def test_resume_needs_a_fresh_token_of_the_same_teacher(unit, lab):
    pad = PadClient(lab.pad_socket)
    try:
        _start(unit)
        _pause(pad, unit)
        # The same teacher's token, but for no challenge: not armed.
        assert pad.token(teacher_token(lab, "t-evans", "n" * 24)) == {
            "type": "result", "ok": False, "reason": "not armed"}
        # Another teacher's token for a fresh challenge.
        assert _resume(unit, "t-jones", "987654") == {"ok": False,
                                                     "reason": "paused by another teacher"}
        assert unit.state() == "paused"
        time.sleep(0.3)
        events = lab.timeline()
        ((_, paused_at),) = [(e["ev"], e["t"]) for e in events
                             if e["ev"] == "state" and e["state"] == "paused"]
        assert not [e for e in events if e["ev"] == "device" and e["phase"] == "open"
                    and e["t"] > paused_at]
        assert led_intervals(events)[-1][1] < paused_at
        # Stop while paused finishes the recording (P8).
        pad.send({"type": "stop"})
        assert pad.receive("result")["ok"]
        unit.wait_state("idle")
    finally:
        pad.close()
    events = lab.timeline()
    assert check_all(events) == []
    refused = [e["reason"] for e in events if e["ev"] == "token" and not e["ok"]]
    assert refused == ["not armed", "paused by another teacher"]
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert len(manifest.pauses) == 1 and manifest.body["ended_by"] == "stop from pad"


def _chapters(path) -> list[dict]:
    return json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60).stdout)["chapters"]


def test_two_pauses_and_three_marks_decrypt_to_one_lesson_with_chapters(unit, lab, tmp_path):
    pad = PadClient(lab.pad_socket)
    try:
        _start(unit)
        for part in range(3):
            time.sleep(0.6)
            pad.send({"type": "mark"})
            assert pad.receive("result")["reason"] == "marked"
            time.sleep(0.6)
            if part < 2:
                _pause(pad, unit)
                pad.send({"type": "mark"})  # nothing to mark while paused
                assert pad.receive("result")["reason"] == "not recording"
                time.sleep(0.4)
                assert _resume(unit)["ok"]
                unit.wait_state("recording")
        unit.control("press")
        unit.wait_state("idle")
    finally:
        pad.close()
    events = lab.timeline()
    assert check_all(events) == []
    marked = [e["seconds"] for e in events if e["ev"] == "bookmark"]
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert manifest.bookmarks == marked and len(marked) == 3
    assert len(manifest.pauses) == 2
    for (a, b), (p, r) in zip(manifest.pauses, _paused_intervals(events), strict=True):
        assert b - a >= r - p - 0.5 and b > a  # as long as the unit stayed paused, roughly
    # One recording, segments numbered on across the pauses.
    files = [s.file for s in manifest.segments]
    assert [s.index for s in manifest.segments] == list(range(1, len(files) + 1))

    out = tmp_path / "lesson.mp4"
    decrypt_recording(rec, identity(lab), out, known=None, trust_new_unit=True)
    starts = [float(c["start_time"]) for c in _chapters(out)]
    assert len(starts) == 4, (starts, marked)
    for start, seconds in zip(starts[1:], marked, strict=True):
        assert abs(start - seconds) <= 1 / FPS
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        times, counters = [], []
        for frame in container.decode(video=0):
            assert frame.pts is not None
            times.append(round(float(frame.pts * stream.time_base) * FPS))
            counters.append(read_counter(frame.to_ndarray(format="bgr24")))
    # One lesson: every frame once, back to back, across the pauses.
    assert times == list(range(times[0], times[0] + len(times)))
    # The camera's own frame counter kept running while it was closed: the lesson holds every
    # frame it read, once, in order, and misses exactly the frames of the two pauses.
    read = [e["n"] for e in events if e["ev"] == "frame" and e["device"] == "camera"]
    assert counters == read
    gaps = [(a, b) for a, b in zip(counters, counters[1:], strict=False) if b != a + 1]
    assert len(gaps) == 2 and all(b > a + 1 for a, b in gaps)
    # Each gap is as long as the camera was closed for its pause (to the frame).
    closed = _camera_closed_intervals(events)
    assert len(closed) == 2
    for (a, b), (shut, opened) in zip(gaps, closed, strict=True):
        assert abs((b - a - 1) - (opened - shut) * FPS) <= 1.5, (a, b, shut, opened)


def _camera_closed_intervals(events: list[dict]) -> list[tuple[float, float]]:
    """(closed, opened again) times of the camera within the recording."""
    out, shut = [], None
    for e in events:
        if e["ev"] == "device" and e["device"] == "camera":
            if e["phase"] == "close":
                shut = e["t"]
            elif e["phase"] == "open" and shut is not None:
                out.append((shut, e["t"]))
                shut = None
    return out


def test_pause_while_not_recording_is_refused(unit, lab):
    pad = PadClient(lab.pad_socket)
    try:
        pad.send({"type": "pause"})
        assert pad.receive("result") == {"type": "result", "ok": False,
                                         "reason": "not recording"}
    finally:
        pad.close()


def test_pause_is_a_message_of_exactly_its_type():
    assert parse_message(b'{"type":"pause"}') == {"type": "pause"}
    with pytest.raises(MalformedMessage):
        parse_message(b'{"type":"pause","minutes":5}')


def test_a_pause_longer_than_the_maximum_finishes_the_recording(lab_template, short_dir):
    lab = lab_template.copy(short_dir, recording={"max_pause_minutes": 0.01})  # 0.6 s
    with lab.daemon() as unit:
        pad = PadClient(lab.pad_socket)
        try:
            _start(unit)
            _pause(pad, unit)
            unit.wait_state("idle")
        finally:
            pad.close()
    events = lab.timeline()
    assert check_all(events) == []
    ((paused, ended),) = _paused_intervals(events)
    assert ended - paused >= 0.6
    assert not [e for e in events if e["ev"] == "device" and e["phase"] == "open"
                and e["t"] > paused]
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert manifest.body["ended_by"] == "maximum pause" and len(manifest.pauses) == 1
    assert manifest.pauses[0][1] - manifest.pauses[0][0] >= 0.6


def test_the_record_button_held_down_pauses_and_a_press_arms_the_resume(lab_template, short_dir):
    lab = lab_template.copy(short_dir, gpio={"long_press_s": 0.5})
    with lab.daemon() as unit:
        _start(unit)
        unit.control("hold", seconds=1.0)
        unit.wait_state("paused")
        assert unit.control("status")["open"] == []
        time.sleep(0.3)
        # The release of a long press does nothing more: no press, so no resume challenge.
        assert [e["ev"] for e in lab.timeline() if e["ev"] in ("press", "challenge")] == [
            "press", "challenge"]
        unit.control("press")  # a short press while paused: a fresh challenge for the resume
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("recording")
        unit.control("press")  # and a short press while recording still stops (P8)
        unit.wait_state("idle")
    events = lab.timeline()
    assert check_all(events) == []
    assert len(device_intervals(events)) == 4 and len(led_intervals(events)) == 2
