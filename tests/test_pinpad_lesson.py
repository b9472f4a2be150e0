"""Lessons through the real pad service (pinpad, on the simulated keypad) and the real daemon,
with both kinds of teacher key: sealed on the pad, and on the teacher's FIDO2 security key."""
from __future__ import annotations

import pytest

from hwsim.invariants import check_all, device_intervals
from hwsim.lab import Lab


@pytest.fixture(scope="module")
def both_kinds(tmp_path_factory) -> Lab:
    return Lab.create(tmp_path_factory.mktemp("both-kinds"),
                      teachers={"t-evans": "432187", "t-ahmed": "246810"},
                      security_keys={"t-ahmed"})


@pytest.mark.parametrize("teacher", ["t-evans", "t-ahmed"], ids=["key-on-the-pad", "security-key"])
def test_a_lesson_started_on_the_keypad_keeps_p1_p2_p3(both_kinds, short_dir, teacher):
    lab = both_kinds.copy(short_dir)
    with lab.daemon() as unit:
        result = unit.lesson(teacher, seconds=0.3)
        assert result == {"type": "result", "ok": True, "reason": "recording"}
    events = lab.timeline()
    said = [e.get("said") or e.get("refused") for e in events if e["ev"] == "pad"]
    assert said == ["prompt", "accepted"]
    assert [e["ok"] for e in events if e["ev"] == "token"] == [True]
    assert len(device_intervals(events)) == 2 and check_all(events) == []


def test_a_wrong_pin_on_a_security_key_is_refused_by_the_key_and_nothing_opens(both_kinds,
                                                                              short_dir):
    lab = both_kinds.copy(short_dir)
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        result = unit.control("pin", teacher="t-ahmed", pin="135790")["result"]
        assert result == {"type": "result", "ok": False, "pad": True,
                          "reason": "wrong PIN, 7 tries left"}
        assert unit.state() == "armed"
    events = lab.timeline()
    assert [e for e in events if e["ev"] == "token"] == [], "nothing reached the unit"
    assert device_intervals(events) == []
