"""Hostile teacher cards (issue 13, trust items 1 and 3): a signing key that is a small-order
point, a teacher id with a trailing newline, a display name that rewrites the terminal, and a
FIFO in teachers.d. Each is refused with its reason, at `roster add` and at load, and none of
them starts a recording, hangs `roster list` or the daemon."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pyrage
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import Algorithm

from teacher_tools.account import Account, AccountError
from formats.ids import is_teacher_id
from appliance.roster import CardRejected, Roster, TeacherCard, printable
from appliance.token import Reason, TokenRejected, TokenVerifier
from formats.keytext import raw_public
from hwsim.account_server import Refusal, parse_address
from hwsim.invariants import check_all, device_intervals, led_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from tests.padclient import PadClient, teacher_token

P = 2**255 - 19


def _encoding(y: int, x_sign: int = 0) -> bytes:
    return (y | x_sign << 255).to_bytes(32, "little")


IDENTITY = _encoding(1)  # the neutral point: [k]A is itself for every k
# libsodium's blocklist of small-order encodings (ge25519_has_small_order): the points of order
# 1, 2, 4 and 8, and the non-canonical encodings p and p + 1 of the points y = 0 and y = 1; and
# each again with the sign bit of x set, which is non-canonical where x = 0.
_BLOCKLIST = {
    "y=0 (order 4)": _encoding(0),
    "identity (order 1)": IDENTITY,
    "order 8": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    "order 8, other": bytes.fromhex(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    "y=p-1 (order 2)": _encoding(P - 1),
    "y=p, non-canonical 0 (order 4)": _encoding(P),
    "y=p+1, non-canonical identity": _encoding(P + 1),
}
SMALL_ORDER = dict(_BLOCKLIST)
SMALL_ORDER.update({f"{name}, x sign set": raw[:31] + bytes([raw[31] | 0x80])
                    for name, raw in _BLOCKLIST.items()})

# With R = the identity and S = 0, the check [S]B = R + [k]A holds whenever [k]A is the
# identity: always for the identity key, for one message in 2, 4 or 8 for the others.
NO_KEY_SIGNATURE = IDENTITY + bytes(32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _new_recipient() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


def _card_payload(teacher_id: str, name: str, signing_key: bytes, recipient: str) -> bytes:
    return json.dumps({"classcam_card": 2, "teacher_id": teacher_id, "name": name,
                       "signing_key": _b64(signing_key), "recipient": recipient},
                      ensure_ascii=False).encode()


def _card_file(jws: str) -> bytes:
    """A version 2 card file (README: the card format) around a compact JWS."""
    return json.dumps({"classcam_card": 2, "jws": jws}).encode()


def forged_card(teacher_id: str, raw_key: bytes, recipient: str) -> bytes:
    """A card for the small-order "key" `raw_key`, "signed" without any private key. The name is
    varied until the fixed signature verifies (at once for the identity; 1 try in 8 at worst)."""
    key = Ed25519PublicKey.from_public_bytes(raw_key)  # cryptography takes any 32 bytes
    forger = jwt.PyJWS(algorithms=[])
    forger.register_algorithm("EdDSA", _NoKeyEdDSA())
    for attempt in range(400):
        payload = _card_payload(teacher_id, f"Mallory {attempt}", raw_key, recipient)
        jws = forger.encode(payload, key=None, algorithm="EdDSA",
                            headers={"typ": "classcam-card"})
        signing_input = jws.rsplit(".", 1)[0].encode()
        try:
            key.verify(NO_KEY_SIGNATURE, signing_input)
        except InvalidSignature:
            continue
        return _card_file(jws)
    raise AssertionError("no name made the signature verify")


def card_signed_by(key: Ed25519PrivateKey, teacher_id: str, name: str, recipient: str) -> bytes:
    """A card whose binding signature really verifies, with any id and name (as an attacker with
    their own key makes one; `TeacherCard.create` would refuse these)."""
    payload = _card_payload(teacher_id, name, raw_public(key.public_key()), recipient)
    return _card_file(jwt.PyJWS().encode(payload, key, algorithm="EdDSA",
                                         headers={"typ": "classcam-card"}))


class _NoKeyEdDSA(Algorithm):
    """PyJWT's EdDSA slot, "signing" with no private key: the fixed signature above."""

    def prepare_key(self, key):
        return key

    def sign(self, msg: bytes, key) -> bytes:
        return NO_KEY_SIGNATURE

    def verify(self, msg: bytes, key, sig: bytes) -> bool:
        raise NotImplementedError

    @staticmethod
    def to_jwk(key_obj, as_dict=False):
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk):
        raise NotImplementedError


def forged_token(teacher_id: str, nonce: str, recipient: str) -> str:
    """A start token for `teacher_id` made by PyJWT with no private key at all."""
    forger = jwt.PyJWS(algorithms=[])
    forger.register_algorithm("EdDSA", _NoKeyEdDSA())
    now = int(time.time())
    claims = {"sub": teacher_id, "aud": DEVICE_ID, "nonce": nonce, "iat": now, "exp": now + 60,
              "act": "start", "rcpt": recipient}
    return forger.encode(json.dumps(claims).encode(), key=None, algorithm="EdDSA",
                         headers={"kid": teacher_id})


def classcam(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE))


def _arm(unit) -> str:
    """Arm the unit and return its current challenge, from the timeline."""
    unit.control("press")
    unit.wait_state("armed")
    return [e for e in unit.lab.timeline() if e["ev"] == "challenge"][-1]["nonce"]


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and printable(c) != c]


# Item 1: small-order signing keys


@pytest.mark.parametrize("point", list(SMALL_ORDER))
def test_a_card_with_a_small_order_signing_key_is_refused_with_its_reason(tmp_path, point):
    data = forged_card("t-mallory", SMALL_ORDER[point], _new_recipient())
    with pytest.raises(CardRejected) as refused:
        Roster(tmp_path).add(data)
    assert refused.value.reason.startswith("signing key is refused: not a usable Ed25519 public "
                                           "key (a small-order")
    assert list(tmp_path.iterdir()) == []


def test_roster_add_refuses_the_identity_key_in_one_line_and_enrols_nothing(tmp_path):
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    card = tmp_path / "mallory.card.json"
    card.write_bytes(forged_card("t-mallory", IDENTITY, _new_recipient()))
    run = classcam("roster", "add", str(card), "--roster-dir", str(roster))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"classcam: {card}: refused: signing key is refused: not a usable "
                          "Ed25519 public key (a small-order, non-canonical or invalid point)\n")
    assert list(roster.iterdir()) == []


def test_a_token_forged_for_a_small_order_key_already_enrolled_starts_nothing(lab):
    # A card that reached teachers.d before the check (by hand, or by an older version).
    recipient = _new_recipient()
    (lab.roster_dir / "t-mallory.json").write_bytes(forged_card("t-mallory", IDENTITY, recipient))
    with lab.daemon() as unit:
        pad = PadClient(lab.pad_socket)
        for _ in range(2):
            nonce = _arm(unit)
            assert pad.token(forged_token("t-mallory", nonce, recipient)) == {
                "type": "result", "ok": False, "reason": "unknown teacher"}
            assert unit.state() == "armed"
            unit.control("press")
            unit.wait_state("idle")
        # The bad card drops only itself: an enrolled teacher still records.
        nonce = _arm(unit)
        assert pad.token(teacher_token(lab, "t-evans", nonce))["reason"] == "recording"
        unit.wait_state("recording")
        unit.control("press")
        unit.wait_state("idle")
        pad.close()
    events = lab.timeline()
    tokens = [e for e in events if e["ev"] == "token"]
    assert [(e["ok"], e["reason"]) for e in tokens] == [
        (False, "unknown teacher"), (False, "unknown teacher"), (True, "")]
    # Camera, microphone and the recording light came on only after t-evans's own token.
    assert device_intervals(events) and led_intervals(events)
    assert all(opened > tokens[2]["t"] for _, opened, _ in device_intervals(events))
    assert all(on > tokens[2]["t"] for on, _ in led_intervals(events))
    assert check_all(events) == []
    # Ignored at load (before the daemon said it was ready), and said once, not per token.
    journal = lab.journal().splitlines()
    ignored = [i for i, line in enumerate(journal) if "roster: ignoring t-mallory.json" in line]
    ready = next(i for i, line in enumerate(journal) if "ready: device" in line)
    assert len(ignored) == 1 and ignored[0] < ready
    assert "signing key is refused: not a usable Ed25519 public key" in journal[ignored[0]]


# Item 3: one teacher id rule, display names that cannot rewrite the terminal, no FIFO hang


IDS = ["t-evans", "a", "0.x_y-z", "t" * 64,
       "t-evans\n", "T-EVANS", "-t", ".t", "t" * 65, "t-évans", "t evans", "t/evans", ""]


@pytest.mark.parametrize("teacher_id", IDS, ids=repr)
def test_the_unit_the_token_check_and_the_account_agree_on_every_teacher_id(tmp_path,
                                                                           teacher_id):
    key = Ed25519PrivateKey.generate()
    recipient = _new_recipient()
    try:
        Roster(tmp_path).add(card_signed_by(key, teacher_id, "Ms Evans", recipient))
        enrolled = True
    except CardRejected as e:
        assert e.reason.startswith("teacher_id ") and "must be 1-64 of a-z 0-9 . _ -" in e.reason
        enrolled = False
    try:
        parse_address(f"/v1/teachers/{teacher_id}/recordings")
        server_accepts = True
    except Refusal:
        server_accepts = False
    try:
        Account("https://account.invalid", teacher_id, Path("c.pem"), Path("k.pem"), None).close()
        client_accepts = True
    except AccountError:
        client_accepts = False
    verifier = TokenVerifier(Roster(tmp_path), DEVICE_ID, clock_synchronised=lambda: False)
    token = jwt.encode({"sub": teacher_id, "aud": DEVICE_ID, "nonce": "n", "iat": 1, "exp": 61,
                        "act": "start", "rcpt": recipient}, key, algorithm="EdDSA",
                       headers={"kid": teacher_id})
    try:
        verifier.verify(token)
        token_accepted = True
    except TokenRejected as e:
        assert e.reason == Reason.MALFORMED
        token_accepted = False
    expected = teacher_id in IDS[:4]
    assert (is_teacher_id(teacher_id), enrolled, server_accepts, client_accepts,
            token_accepted) == (expected,) * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ([f"{teacher_id}.json"] if expected
                                                          else [])


NAMES = {
    "newline and a fake line": "Ms Evans\nenrolled t-head (Head), fingerprint 0000:0000",
    "carriage return": "Ms Evans\r0000:0000:0000",
    "terminal escape": "Ms \x1b[2J\x1b[HEvans",
    "right-to-left override": "Ms Evans \u202e0000:1111",
    "bidi isolate": "Ms \u2066Evans\u2069",
    "zero-width space": "Ms\u200bEvans",
    "line separator": "Ms Evans\u2028x",
    "tab": "Ms\tEvans",
}


@pytest.mark.parametrize("case", list(NAMES))
def test_roster_add_refuses_a_name_with_control_or_invisible_characters(tmp_path, case):
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    card = tmp_path / "card.json"
    card.write_bytes(card_signed_by(Ed25519PrivateKey.generate(), "t-evans", NAMES[case],
                                    _new_recipient()))
    run = classcam("roster", "add", str(card), "--roster-dir", str(roster))
    assert run.returncode == 2 and run.stdout == ""
    assert "refused: name holds control or invisible characters (" in run.stderr
    assert _raw_controls(run.stderr) == [] and run.stderr.count("\n") == 1
    assert list(roster.iterdir()) == []


def test_keys_new_will_not_make_a_card_it_cannot_enrol(tmp_path):
    run = classcam("keys", "new", "--teacher-id", "t-evans", "--name", "Ms \u202eEvans",
                   "--dir", str(tmp_path))
    assert run.returncode == 2 and "name holds control or invisible characters" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_roster_list_skips_bad_cards_on_disk_and_prints_no_raw_control_character(tmp_path):
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    good_key = Ed25519PrivateKey.generate()
    Roster(roster).add(card_signed_by(good_key, "t-jones", "Mr Jones", _new_recipient()))
    (roster / "t-evans.json").write_bytes(card_signed_by(
        Ed25519PrivateKey.generate(), "t-evans", "Ms Evans\x1b[2K\r t-head\tHead", _new_recipient()))
    (roster / "t-evans\n.json").write_bytes(card_signed_by(
        Ed25519PrivateKey.generate(), "t-evans\n", "Ms Evans", _new_recipient()))
    (roster / "\x1b[2J\u202e.json").write_bytes(b"{}")
    run = classcam("roster", "list", "--roster-dir", str(roster))
    assert run.returncode == 0
    fingerprint = TeacherCard.parse((roster / "t-jones.json").read_bytes()).fingerprint
    assert run.stdout == f"t-jones\tMr Jones\t{fingerprint}\n"
    assert _raw_controls(run.stderr) == []
    ignored = sorted(line for line in run.stderr.splitlines() if "roster: ignoring" in line)
    assert ignored == [
        "roster: ignoring \\x1b[2J\\u202e.json: the file name is not <teacher id>.json",
        "roster: ignoring t-evans.json: name holds control or invisible characters "
        "(\\x1b\\r\\t)",
        "roster: ignoring t-evans\\n.json: the file name is not <teacher id>.json",
    ]


def test_printable_escapes_what_could_rewrite_a_terminal_and_keeps_names():
    assert printable("Siân Ó Dálaigh-Wyn 李") == "Siân Ó Dálaigh-Wyn 李"
    assert printable("a\x1b[2J\u202eb\u2066\n\x00") == "a\\x1b[2J\\u202eb\\u2066\\n\\x00"


def test_a_fifo_or_a_device_in_teachers_d_does_not_hang_roster_list(tmp_path):
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    Roster(roster).add(card_signed_by(Ed25519PrivateKey.generate(), "t-jones", "Mr Jones",
                                      _new_recipient()))
    os.mkfifo(roster / "t-fifo.json")  # no writer: reading it would wait for ever
    (roster / "t-null.json").symlink_to("/dev/null")
    run = classcam("roster", "list", "--roster-dir", str(roster), timeout=20)
    assert run.returncode == 0 and run.stdout.startswith("t-jones\tMr Jones\t")
    assert run.stdout.count("\n") == 1
    assert "roster: ignoring t-fifo.json: not a regular file" in run.stderr
    assert "roster: ignoring t-null.json: not a regular file" in run.stderr


def test_a_fifo_in_teachers_d_does_not_wedge_the_daemon(lab):
    os.mkfifo(lab.roster_dir / "t-fifo.json")
    with lab.daemon(start_timeout=20) as unit:  # the daemon reads the roster as it starts
        pad = PadClient(lab.pad_socket)
        nonce = _arm(unit)
        # A token naming the FIFO's id is answered at once, not waited on.
        token = jwt.encode({"sub": "t-fifo", "aud": DEVICE_ID, "nonce": nonce},
                           Ed25519PrivateKey.generate(), algorithm="EdDSA",
                           headers={"kid": "t-fifo"})
        assert pad.token(token) == {"type": "result", "ok": False, "reason": "unknown teacher"}
        unit.control("press")
        unit.wait_state("idle")
        pad.close()
        assert unit.lesson("t-evans", seconds=0.3)["ok"]
    assert "roster: ignoring t-fifo.json: not a regular file" in lab.journal()
    assert len(device_intervals(lab.timeline())) == 2
