"""P1 and P3 across a pause: once every device has closed and the recording LED has gone dark,
the next open needs a fresh accepted token and a complete notice, as a new session does. Each
synthetic record below breaks one of these."""
from __future__ import annotations

from hwsim.invariants import check_all, check_p1, check_p3


def ev(t, ev, **f):
    return {"t": t, "ev": ev, **f}


FIRST = [
    ev(1, "challenge", nonce="n1"),
    ev(2, "token", ok=True, act="start", nonce="n1"),
    ev(3, "pin", name="recording_led", value=1.0),
    ev(4, "notice", phase="start", label="start"),
    ev(5, "notice", phase="end", label="start", completed=True),
    ev(6, "device", device="camera", phase="open"),
    ev(6.5, "device", device="microphone", phase="open"),
    ev(7, "device", device="camera", phase="close"),
    ev(7.5, "device", device="microphone", phase="close"),
    ev(8, "pin", name="recording_led", value=0.0),
    ev(8.5, "state", state="paused"),
]
RESUME_TOKEN = [ev(9, "challenge", nonce="n2"), ev(10, "token", ok=True, act="start", nonce="n2")]
RESUMED = [
    ev(11, "pin", name="recording_led", value=1.0),
    ev(12, "notice", phase="start", label="start"),
    ev(13, "notice", phase="end", label="start", completed=True),
    ev(14, "device", device="camera", phase="open"),
    ev(15, "device", device="camera", phase="close"),
    ev(16, "pin", name="recording_led", value=0.0),
    ev(17, "state", state="idle"),
]


def test_a_pause_resumed_with_a_fresh_token_and_the_notice_passes():
    assert check_all(FIRST + RESUME_TOKEN + RESUMED) == []


def test_p1_catches_a_resume_without_a_fresh_token():
    assert check_p1(FIRST + RESUMED)
    # A token for the first challenge, accepted again, is not a fresh one.
    stale = [ev(10, "token", ok=True, act="start", nonce="n1")]
    assert check_p1(FIRST + stale + RESUMED)


def test_p3_catches_a_resume_without_the_notice():
    silent = [e for e in RESUMED if e["ev"] != "notice"]
    assert check_p3(FIRST + RESUME_TOKEN + silent)
