"""Bad tokens, each refused with its named reason and no capture: through the real pad link to
the real daemon, then checked against the simulator's timeline."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import tempfile
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teacher_tools.keys import load_signing_key
from appliance.roster import TeacherCard
from hwsim.invariants import check_all, device_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from tests.padclient import PadClient, teacher_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(lab, nonce: str, **overrides) -> dict:
    card = TeacherCard.parse(lab.key_files("t-evans").card.read_bytes())
    now = int(time.time())
    claims = {"sub": "t-evans", "aud": DEVICE_ID, "nonce": nonce, "iat": now, "exp": now + 60,
              "act": "start", "rcpt": card.recipient}
    claims.update(overrides)
    return claims


def alg_none(lab, nonce):
    header = _b64(json.dumps({"alg": "none", "kid": "t-evans", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(lab, nonce)).encode())}."


def hs256_with_public_key(lab, nonce):
    # The classic forgery: an HMAC keyed with the teacher's *public* key, which anyone has.
    card = TeacherCard.parse(lab.key_files("t-evans").card.read_bytes())
    secret = card.signing_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    header = _b64(json.dumps({"alg": "HS256", "kid": "t-evans", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(lab, nonce)).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def signed_by_stranger(lab, nonce, kid="t-evans"):
    return jwt.encode(_claims(lab, nonce), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                      headers={"kid": kid})


CASES = {
    "malformed": (lambda lab, n: "not-a-jwt", "malformed"),
    "garbage segments": (lambda lab, n: "a.b.c", "malformed"),
    "alg none": (alg_none, "algorithm not allowed"),
    "HS256 with the public key as secret": (hs256_with_public_key, "algorithm not allowed"),
    "unknown teacher": (lambda lab, n: signed_by_stranger(lab, n, kid="t-nobody"), "unknown teacher"),
    "bad signature": (signed_by_stranger, "bad signature"),
    "another device": (lambda lab, n: teacher_token(lab, "t-evans", n, device_id="room-9"),
                       "wrong device"),
    "wrong action": (lambda lab, n: teacher_token(lab, "t-evans", n, action="record"),
                     "wrong action"),
    "recipient swapped": (lambda lab, n: teacher_token(
        lab, "t-evans", n, recipient=TeacherCard.parse(
            lab.key_files("t-jones").card.read_bytes()).recipient),
        "recipient does not match roster"),
    "expired (clock synchronised)": (lambda lab, n: teacher_token(
        lab, "t-evans", n, now=time.time() - 3600), "expired token"),
    "minted before the challenge": (lambda lab, n: teacher_token(lab, "t-evans", "guessed-nonce"),
                                    "expired challenge"),
    "lifetime over 120 s": (lambda lab, n: teacher_token(lab, "t-evans", n, lifetime_s=600),
                            "malformed"),
    "sub is not kid": (lambda lab, n: jwt.encode(
        _claims(lab, n, sub="t-jones"), load_signing_key(lab.key_files("t-evans").signing_key,
                                                         PASSPHRASE),
        algorithm="EdDSA", headers={"kid": "t-evans"}), "malformed"),
}


@pytest.fixture(scope="module")
def armed_unit(lab_template):
    """One daemon for the whole table (starting one per case would take minutes); each case
    arms it if it is not armed, and reads only the journal and timeline written since it began
    (`Since`), so what an earlier case wrote cannot make a later one pass."""
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root)
    with lab.daemon() as unit:
        pad = PadClient(lab.pad_socket)
        yield lab, unit, pad
        pad.close()
    shutil.rmtree(root, ignore_errors=True)


class Since:
    """The journal lines and timeline events a lab's daemon wrote after this was made."""

    def __init__(self, lab):
        self._lab = lab
        # Journal lines wait for the health tick (P9): first let every refusal an earlier case
        # caused reach the journal, so none of them lands in this case's slice.
        _wait_until(lambda: _journal_refusals(lab) == _timeline_refusals(lab),
                    "earlier refusals to reach the journal")
        self._journal_at = lab.log_path.stat().st_size
        self._events_at = len(lab.timeline())

    def journal_lines(self) -> list[str]:
        with open(self._lab.log_path, "rb") as f:
            f.seek(self._journal_at)
            return f.read().decode(errors="replace").splitlines()

    def refusals(self, at_least: int) -> list[str]:
        """The journal's "token refused" lines since, each from that phrase on, once there are
        `at_least` of them (they are written on the health tick)."""
        def lines() -> list[str]:
            return [line[line.index("token refused"):] for line in self.journal_lines()
                    if "token refused" in line]
        _wait_until(lambda: len(lines()) >= at_least, f"{at_least} refusal line(s)")
        return lines()

    def events(self) -> list[dict]:
        return self._lab.timeline()[self._events_at:]


def _journal_refusals(lab) -> int:
    return lab.journal().count("token refused")


def _timeline_refusals(lab) -> int:
    return sum(1 for e in lab.timeline() if e["ev"] == "token" and not e["ok"])


def _wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)



def _arm(unit, pad) -> str:
    """Arm the unit (unless it is) and return its current challenge, from the timeline."""
    if unit.state() != "armed":
        unit.control("press")
    unit.wait_state("armed")
    return [e for e in unit.lab.timeline() if e["ev"] == "challenge"][-1]["nonce"]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_token_is_refused_with_its_reason(armed_unit, case):
    lab, unit, pad = armed_unit
    make, reason = CASES[case]
    nonce = _arm(unit, pad)
    since = Since(lab)
    result = pad.token(make(lab, nonce))
    assert result == {"type": "result", "ok": False, "reason": reason}
    assert unit.state() == "armed"
    assert device_intervals(since.events()) == []
    assert [(e["ok"], e["reason"]) for e in since.events() if e["ev"] == "token"] == [
        (False, reason)]
    # This token's own line: one refusal, with its reason (journal lines wait for the health
    # tick, P9).
    assert since.refusals(1) == [f"token refused: {reason}"]


def test_not_armed(armed_unit):
    lab, unit, pad = armed_unit
    if unit.state() == "armed":
        unit.control("press")
    unit.wait_state("idle")
    since = Since(lab)
    result = pad.token(teacher_token(lab, "t-evans", "never-issued"))
    assert result == {"type": "result", "ok": False, "reason": "not armed"}
    assert device_intervals(since.events()) == []
    assert since.refusals(1) == ["token refused: not armed"]


def test_token_for_a_challenge_that_timed_out_or_was_cancelled(armed_unit):
    lab, unit, pad = armed_unit
    nonce = _arm(unit, pad)
    unit.control("press")  # disarm: that challenge has ended
    unit.wait_state("idle")
    unit.control("press")
    unit.wait_state("armed")
    since = Since(lab)
    result = pad.token(teacher_token(lab, "t-evans", nonce))
    assert result == {"type": "result", "ok": False, "reason": "expired challenge"}
    assert device_intervals(since.events()) == []
    assert since.refusals(1) == ["token refused: expired challenge"]


def test_replayed_after_a_successful_start(armed_unit):
    lab, unit, pad = armed_unit
    nonce = _arm(unit, pad)
    since = Since(lab)
    token = teacher_token(lab, "t-evans", nonce)
    assert pad.token(token) == {"type": "result", "ok": True, "reason": "recording"}
    unit.wait_state("recording")
    assert pad.token(token)["reason"] == "replayed"  # while recording
    unit.control("press")
    unit.wait_state("idle")
    _arm(unit, pad)
    assert pad.token(token) == {"type": "result", "ok": False, "reason": "replayed"}
    unit.control("press")
    unit.wait_state("idle")
    events = since.events()
    assert len(device_intervals(events)) == 2  # the one good start, camera and microphone
    assert check_all(lab.timeline()) == []
    assert since.refusals(2) == ["token refused: replayed"] * 2
