"""A token PyJWT cannot parse is a refusal, never an exception (issue 13, trust item 5): a header
nested 1,100 levels deep is refused as malformed by the token check, over the pad socket and over
the serial pad link, and the link and the daemon go on working."""
from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import tty

import jwt
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from appliance.roster import Roster
from appliance.token import Reason, TokenRejected, TokenVerifier
from hwsim.invariants import check_all, device_intervals
from hwsim.lab import DEVICE_ID
from tests.padclient import PadClient, teacher_token
from tests.test_serial import _readline

DEPTH = 1100  # past Python's recursion limit of 1000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def nested_header_token() -> str:
    """A token whose header is valid JSON nested DEPTH arrays deep (and under 4 KiB in all)."""
    header = b'{"alg":"EdDSA","kid":"t-evans","x":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    return f"{_b64(header)}.{_b64(b'{}')}.{_b64(bytes(64))}"


def _verifier(lab) -> TokenVerifier:
    return TokenVerifier(Roster(lab.roster_dir), DEVICE_ID, clock_synchronised=lambda: True)


def test_a_deeply_nested_header_is_refused_as_malformed(lab):
    token = nested_header_token()
    assert len(token) < 4096  # reaches the parser: not refused for its length
    with pytest.raises(TokenRejected) as refused:
        _verifier(lab).verify(token)
    assert refused.value.reason == Reason.MALFORMED


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   ValueError("bad"), TypeError("bad"), KeyError("alg")],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["get_unverified_header", "decode"])
def test_any_error_while_parsing_a_token_is_a_malformed_refusal(lab, monkeypatch, stage, error):
    # What PyJWT 2.13 and older did with a deeply nested header, and whatever a later version
    # might let out: the token check turns it into a refusal.
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(jwt, stage, fail)
    with pytest.raises(TokenRejected) as refused:
        _verifier(lab).verify(teacher_token(lab, "t-evans", "nonce"))
    assert refused.value.reason == Reason.MALFORMED
    assert refused.value.detail == f"cannot parse: {type(error).__name__}"


def test_the_pyjwt_floor_has_the_fix_and_so_does_the_pyjwt_in_use():
    floor, = (Requirement(r) for r in importlib.metadata.requires("classcam")
              if Requirement(r).name.lower() == "pyjwt")
    assert not floor.specifier.contains("2.13.0") and floor.specifier.contains("2.14.0")
    assert floor.specifier.contains(Version(jwt.__version__))


def test_the_pad_socket_refuses_a_nested_header_and_goes_on(unit, lab):
    pad = PadClient(lab.pad_socket)
    unit.control("press")
    unit.wait_state("armed")
    nonce = [e for e in lab.timeline() if e["ev"] == "challenge"][-1]["nonce"]
    assert pad.token(nested_header_token()) == {"type": "result", "ok": False,
                                                "reason": "malformed"}
    assert unit.state() == "armed"
    # The same connection, the same challenge: the teacher's own token still starts.
    assert pad.token(teacher_token(lab, "t-evans", nonce)) == {"type": "result", "ok": True,
                                                               "reason": "recording"}
    unit.wait_state("recording")
    pad.send({"type": "stop"})
    assert pad.receive("result")["reason"] == "stopped"
    unit.wait_state("idle")
    pad.close()
    events = lab.timeline()
    assert [(e["ok"], e["reason"]) for e in events if e["ev"] == "token"] == [
        (False, "malformed"), (True, "")]
    assert len(device_intervals(events)) == 2 and check_all(events) == []
    assert unit.proc.poll() is None


def test_the_serial_pad_refuses_a_nested_header_and_its_thread_goes_on(lab):
    pad_fd, unit_fd = os.openpty()
    tty.setraw(pad_fd)
    tty.setraw(unit_fd)
    os.set_blocking(pad_fd, False)
    lab.settings["pad"] = {"serial": os.ttyname(unit_fd)}
    lab.write_config()
    try:
        with lab.daemon() as unit:
            os.write(pad_fd, b'{"type":"arm"}\n')
            challenge = _readline(pad_fd)
            assert challenge["type"] == "challenge"
            os.write(pad_fd, json.dumps({"type": "token",
                                         "token": nested_header_token()}).encode() + b"\n")
            assert _readline(pad_fd) == {"type": "result", "ok": False, "reason": "malformed"}
            # The thread that reads the serial pad is still there to read the next line.
            os.write(pad_fd, json.dumps({"type": "token", "token": teacher_token(
                lab, "t-evans", challenge["nonce"])}).encode() + b"\n")
            assert _readline(pad_fd) == {"type": "result", "ok": True, "reason": "recording"}
            unit.wait_state("recording")
            os.write(pad_fd, b'{"type":"stop"}\n')
            assert _readline(pad_fd)["reason"] == "stopped"
            unit.wait_state("idle")
    finally:
        os.close(pad_fd)
        os.close(unit_fd)
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []
