"""Enrolment of a teacher's security key (`classcam keys new --security-key`, on the teacher's
computer): a credential for the relying party `classcam` made on the key with its PIN and a
touch, named in the teacher card, which the teacher's signing key signs as before; the card
format takes it and refuses a credential the unit could not use."""
from __future__ import annotations

import argparse
import json

import jwt
import pytest
from fido2 import cbor

from formats.assertion import client_data_hash, parse_message
from formats.card import CardRejected, TeacherCard
from formats.keytext import b64
from hwsim.security_key import SimSecurityKey
from pinpad.security_key import assertion_message
from teacher_tools.cli import UsageError, _keys_new, parser
from teacher_tools.keys import KeyFileError, load_signing_key, new_teacher_keys

PIN = "246810"
PASSPHRASE = "correct horse battery"
CHALLENGE = {"type": "challenge", "device": "unit-1", "nonce": "n-1", "expires_in": 60}


def test_new_keys_with_a_security_key_name_its_credential_in_the_signed_card(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card, files = new_teacher_keys(tmp_path / "keys", "t-evans", "Ms Evans", PASSPHRASE,
                                   security_key=key, security_key_pin=PIN)
    parsed = TeacherCard.parse(files.card.read_bytes())
    assert parsed == card and parsed.security_key is not None
    # The credential is the key's own: the key signs with it, the card's COSE key verifies it.
    msg = assertion_message(key, parsed, PIN, CHALLENGE, "start")
    a = parse_message(msg["assertion"])
    parsed.security_key.public_key.verify(
        a.authenticator_data + client_data_hash(a.client_data), a.signature)
    assert key.touches == 2  # enrolment and the assertion each asked for a touch
    # The card names it under the relying party classcam; the payload is still signed by the
    # teacher's signing key (a JWS), so nobody can swap the credential without that key.
    payload = json.loads(_jws_payload(files.card.read_bytes()))
    assert payload["security_key"]["rp_id"] == "classcam"
    assert payload["security_key"]["credential_id"] == b64(parsed.security_key.credential_id)


def test_a_wrong_pin_at_enrolment_writes_nothing(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    with pytest.raises(KeyFileError, match="security key: wrong PIN, 7 tries left"):
        new_teacher_keys(tmp_path / "keys", "t-evans", "Ms Evans", PASSPHRASE,
                         security_key=key, security_key_pin="000000")
    assert not (tmp_path / "keys").exists()


def test_a_key_without_a_pin_is_not_enrolled(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json")
    with pytest.raises(KeyFileError, match="has no PIN: set one first"):
        new_teacher_keys(tmp_path / "keys", "t-evans", "Ms Evans", PASSPHRASE,
                         security_key=key, security_key_pin=PIN)


def test_the_command_enrols_the_plugged_in_key(tmp_path, capsys):
    (tmp_path / "pass").write_text(PASSPHRASE)
    (tmp_path / "pin").write_text(PIN + "\n")
    args = parser().parse_args(["keys", "new", "--teacher-id", "t-evans", "--dir",
                                str(tmp_path / "keys"), "--passphrase-file",
                                str(tmp_path / "pass"), "--security-key",
                                "--security-key-pin-file", str(tmp_path / "pin")])
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    assert _keys_new(args, lambda: [key]) == 0
    assert "security key:      enrolled" in capsys.readouterr().out
    card = TeacherCard.parse((tmp_path / "keys" / "t-evans.card.json").read_bytes())
    assert card.security_key is not None
    with pytest.raises(UsageError, match="no security key found: plug it in"):
        _keys_new(_with(args, force=True), lambda: [])


def test_old_cards_without_a_security_key_still_parse(tmp_path):
    card, files = new_teacher_keys(tmp_path, "t-evans", "Ms Evans", PASSPHRASE)
    assert TeacherCard.parse(files.card.read_bytes()).security_key is None
    assert "security_key" not in json.loads(_jws_payload(files.card.read_bytes()))


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """A card payload naming a security key, and the signing key that signs it (made once:
    sealing and unsealing the key take seconds of scrypt)."""
    root = tmp_path_factory.mktemp("enrolled")
    key = SimSecurityKey(root / "key.json", pin=PIN)
    _, files = new_teacher_keys(root / "keys", "t-evans", "Ms Evans", PASSPHRASE,
                                security_key=key, security_key_pin=PIN)
    return (json.loads(_jws_payload(files.card.read_bytes())),
            load_signing_key(files.signing_key, PASSPHRASE))


@pytest.mark.parametrize("change, reason", [
    (lambda f: dict(f, rp_id="login.example.org"), "security_key rp_id must be 'classcam'"),
    (lambda f: dict(f, extra="x"), "security_key must have exactly the string fields"),
    (lambda f: dict(f, credential_id=""), "credential_id must be 1 to 1023 bytes"),
    (lambda f: dict(f, public_key=b64(cbor.encode({1: 3, 3: -257, -1: b"n", -2: b"e"}))),
     "must be an ES256 (P-256) or EdDSA (Ed25519) COSE key"),
    (lambda f: dict(f, public_key=b64(cbor.encode({1: 2, 3: -7, -1: 1, -2: b"\1" * 32,
                                                   -3: b"\2" * 32}))),
     "security key is refused"),
    (lambda f: dict(f, public_key=b64(b"\xa2\x03\x26\x01\x02")), "not a canonical CBOR map"),
])
def test_a_card_with_a_security_key_the_unit_cannot_use_is_refused(enrolled, change, reason):
    payload, signing_key = enrolled
    payload = dict(payload, security_key=change(payload["security_key"]))
    token = jwt.PyJWS().encode(json.dumps(payload).encode(), signing_key, algorithm="EdDSA",
                               headers={"typ": "classcam-card"})
    with pytest.raises(CardRejected) as e:
        TeacherCard.parse(json.dumps({"classcam_card": 2, "jws": token}).encode())
    assert reason in e.value.reason


def _jws_payload(card_file: bytes) -> bytes:
    import base64
    token = json.loads(card_file)["jws"]
    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _with(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})
