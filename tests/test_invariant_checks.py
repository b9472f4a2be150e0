"""The timeline checks must catch what they claim to: a checker that passes everything proves
nothing. Each synthetic record below breaks one invariant."""
from __future__ import annotations

from hwsim.invariants import check_p1, check_p2, check_p3


def ev(t, ev, **f):
    return {"t": t, "ev": ev, **f}


GOOD = [
    ev(1, "challenge", nonce="n1"),
    ev(2, "token", ok=True, act="start", nonce="n1"),
    ev(3, "pin", name="recording_led", value=1.0),
    ev(4, "notice", phase="start", label="start"),
    ev(5, "notice", phase="end", label="start", completed=True),
    ev(6, "device", device="camera", phase="open"),
    ev(7, "device", device="camera", phase="close"),
    ev(8, "pin", name="recording_led", value=0.0),
    ev(9, "state", state="idle"),
]


def test_a_good_record_passes():
    assert check_p1(GOOD) == check_p2(GOOD) == check_p3(GOOD) == []


def test_p1_catches_an_open_without_a_token_and_a_reused_token():
    assert check_p1([e for e in GOOD if e["ev"] != "token"])
    reused = GOOD + [e | {"t": e["t"] + 10} for e in GOOD if e["ev"] != "token" and e["ev"] != "challenge"]
    assert check_p1(reused)
    stale = [GOOD[0], ev(1.5, "challenge", nonce="n2")] + GOOD[1:]
    assert check_p1(stale)


def test_p2_catches_led_late_or_early_off():
    late = [e | {"t": 6.5} if e["ev"] == "pin" and e["value"] == 1.0 else e for e in GOOD]
    assert check_p2(sorted(late, key=lambda e: e["t"]))
    early = [e | {"t": 6.9} if e["ev"] == "pin" and e["value"] == 0.0 else e for e in GOOD]
    assert check_p2(sorted(early, key=lambda e: e["t"]))
    assert check_p2([e for e in GOOD if e["ev"] != "pin"])


def test_p3_catches_a_cut_or_missing_notice():
    cut = [e | {"completed": False} if e["ev"] == "notice" and e["phase"] == "end" else e for e in GOOD]
    assert check_p3(cut)
    assert check_p3([e for e in GOOD if e["ev"] != "notice"])
    before_led = [e | {"t": 2.5} if e["ev"] == "notice" and e["phase"] == "start" else e for e in GOOD]
    assert check_p3(sorted(before_led, key=lambda e: e["t"]))
