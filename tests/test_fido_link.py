"""End to end over the real pad link: the real daemon on simulated hardware arms, sends its
challenge over the Unix socket, the pad's code (pinpad/security_key.py) has the simulated
security key sign it with the teacher's PIN, and the unit starts a recording from that assertion;
the timeline proves the order (P1-P3), and a bad PIN never reaches the unit."""
from __future__ import annotations

import pytest

from hwsim.invariants import check_all, device_intervals
from hwsim.security_key import SimSecurityKey
from pinpad.security_key import SecurityKeyError, assertion_message
from tests.fido_keys import PIN, enrol
from tests.padclient import PadClient


def test_a_recording_starts_from_the_security_keys_assertion_over_the_link(lab, tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrol(lab, "t-evans", key)
    with lab.daemon() as unit:
        pad = PadClient(lab.pad_socket)
        try:
            pad.send({"type": "arm"})
            challenge = pad.receive("challenge")
            # The teacher types a wrong PIN first: the key refuses it, nothing is sent.
            with pytest.raises(SecurityKeyError, match="wrong PIN, 7 tries left"):
                assertion_message(key, card, "135790", challenge, "start")
            msg = assertion_message(key, card, PIN, challenge, "start")
            pad.send(msg)
            assert pad.receive("result") == {"type": "result", "ok": True, "reason": "recording"}
            unit.wait_state("recording")
            # The same assertion again: the challenge is used.
            pad.send(msg)
            assert pad.receive("result") == {"type": "result", "ok": False,
                                             "reason": "replayed"}
            pad.send({"type": "stop"})
            assert pad.receive("result")["reason"] == "stopped"
            unit.wait_state("idle")
        finally:
            pad.close()
    events = lab.timeline()
    tokens = [(e["ok"], e["reason"]) for e in events if e["ev"] == "token"]
    assert tokens == [(True, ""), (False, "replayed")]
    assert len(device_intervals(events)) == 2
    assert check_all(events) == []
    assert len(lab.spooled()) >= 1  # the recording, sealed to the teacher


def test_a_discard_from_the_security_key_over_the_link(lab, tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrol(lab, "t-evans", key)
    with lab.daemon() as unit:
        pad = PadClient(lab.pad_socket)
        try:
            for action, reason in (("start", "recording"), ("discard", "discarded")):
                pad.send({"type": "arm"})
                msg = assertion_message(key, card, PIN, pad.receive("challenge"), action)
                pad.send(msg)
                result = pad.receive("result")
                assert (result["ok"], result["reason"]) == (True, reason), result
                if action == "start":
                    unit.wait_state("recording")
                    pad.send({"type": "stop"})
                    pad.receive("result")
                unit.wait_state("idle")
        finally:
            pad.close()
    assert lab.spooled() == []
