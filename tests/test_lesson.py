"""A lesson, end to end, with the real daemon on simulated hardware; P1-P3 proved from the
timeline the simulator wrote, not from the daemon's own account."""
from __future__ import annotations

import time

import pytest

from hwsim.invariants import check_all, check_p1, check_p2, check_p3, device_intervals, led_intervals
from tests.media import spool_contents


@pytest.fixture
def lab(lab_on_each_encoder):
    """Every test here runs on both encoders (tests/conftest.py)."""
    return lab_on_each_encoder


def test_a_lesson_keeps_p1_p2_p3_with_times(unit, lab):
    result = unit.lesson("t-evans", seconds=0.5)
    assert result == {"type": "result", "ok": True, "reason": "recording"}
    events = lab.timeline()
    assert check_p1(events) == [] and check_p2(events) == [] and check_p3(events) == []
    lit = led_intervals(events)
    opened = device_intervals(events)
    assert len(lit) == 1, lit
    assert [d for d, _, _ in opened] == ["camera", "microphone"]
    (on, off), = lit
    notice = [e for e in events if e["ev"] == "notice" and e["label"] == "start"]
    assert [e["phase"] for e in notice] == ["start", "end"] and notice[1]["completed"]
    # The order the room sees: LED, whole notice, devices open ... devices closed, LED off.
    assert on < notice[0]["t"] < notice[1]["t"] < opened[0][1]
    assert max(c for _, _, c in opened) < off
    assert 0.4 < off - on < 10
    # The room is told when it stops, after the LED is off.
    stop = [e for e in events if e["ev"] == "notice" and e["label"] == "stop"]
    assert [e["phase"] for e in stop] == ["start", "end"] and stop[0]["t"] > off


def test_stop_while_armed_disarms_without_opening(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    unit.control("press")
    unit.wait_state("idle")
    events = lab.timeline()
    assert device_intervals(events) == [] and led_intervals(events) == []


def test_stop_while_starting_cuts_the_notice_and_never_opens(lab):
    lab.settings["sim"]["speed"] = 1.0  # a notice of several seconds, so stop lands inside it
    lab.write_config()
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("starting")
        deadline = time.monotonic() + 10
        while not any(e["ev"] == "notice" and e["label"] == "start" for e in lab.timeline()):
            assert time.monotonic() < deadline, "the start notice did not begin"
            time.sleep(0.01)
        pressed = time.monotonic()  # while the notice plays
        unit.control("press")
        unit.wait_state("idle", timeout=5)
        assert time.monotonic() - pressed < 2
    events = lab.timeline()
    assert device_intervals(events) == []
    (on, off), = led_intervals(events)
    assert off > pressed
    notice = [e for e in events if e["ev"] == "notice" and e["label"] == "start"]
    assert notice[-1]["phase"] == "end" and notice[-1]["completed"] is False
    assert check_all(events) == []


def test_stop_from_the_pad_needs_no_token(unit, lab):
    from tests.padclient import PadClient
    unit.control("press")
    unit.wait_state("armed")
    unit.control("pin", teacher="t-jones", pin="987654")
    unit.wait_state("recording")
    pad = PadClient(lab.pad_socket)
    pad.send({"type": "stop"})
    assert pad.receive("result") == {"type": "result", "ok": True, "reason": "stopped"}
    unit.wait_state("idle")
    pad.close()
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []


def test_wrong_pin_is_refused_on_the_pad_and_nothing_opens(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    result = unit.control("pin", teacher="t-evans", pin="000000")["result"]
    assert result["ok"] is False and result["reason"] == "wrong PIN"
    assert unit.state() == "armed"
    assert device_intervals(lab.timeline()) == []


def test_arming_times_out_back_to_idle(lab):
    lab.settings["recording"] = {"arm_timeout_s": 0.5}
    lab.write_config()
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        armed_at = time.monotonic()
        unit.wait_state("idle", timeout=5)
        assert 0.3 < time.monotonic() - armed_at < 3
        # The PIN typed after the timeout gets no recording.
        result = unit.control("pin", teacher="t-evans", pin="432187")["result"]
        assert result["ok"] is False
    assert device_intervals(lab.timeline()) == []


def test_maximum_length_stops_the_recording(lab):
    lab.settings["recording"] = {"max_minutes": 0.02}  # 1.2 s
    lab.write_config()
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        unit.wait_state("idle", timeout=10)
    events = lab.timeline()
    (device, opened, closed), *_ = device_intervals(events)
    assert 1.1 < closed - opened < 3
    assert any(e["ev"] == "stop_requested" and e["why"] == "maximum length" for e in events)
    assert check_all(events) == []


def test_sigterm_during_recording_closes_devices_then_darkens_the_led(lab):
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        assert unit.terminate() == 0
    events = lab.timeline()
    assert [d for d, _, c in device_intervals(events) if c == float("inf")] == []
    (on, off), = led_intervals(events)
    assert off < float("inf") and check_all(events) == []


def test_discard_by_the_teacher_who_recorded_deletes_the_recording(unit, lab):
    unit.lesson("t-evans", seconds=0.2)
    assert len(spool_contents(lab)) == 1
    # Another teacher cannot discard it.
    unit.control("press")
    unit.wait_state("armed")
    result = unit.control("pin", teacher="t-jones", pin="987654", act="discard")["result"]
    assert result == {"type": "result", "ok": False, "reason": "nothing to discard"}
    assert len(spool_contents(lab)) == 1
    # The teacher who made it can.
    unit.control("press")
    unit.wait_state("armed")
    result = unit.control("pin", teacher="t-evans", pin="432187", act="discard")["result"]
    assert result == {"type": "result", "ok": True, "reason": "discarded"}
    unit.wait_state("idle")
    assert spool_contents(lab) == []
    events = lab.timeline()
    assert len(device_intervals(events)) == 2  # only the lesson itself ever opened anything
    assert [e["label"] for e in events if e["ev"] == "notice" and e["phase"] == "end"] == [
        "start", "stop", "discard"]
