"""Teacher card version 2: the signature covers exact bytes the card carries (a compact JWS whose
payload is the card), and everything is read from those bytes. What a card made otherwise, or
changed after signing, gets from `classcam roster add`: a refusal with the reason, nothing
enrolled."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.utils import base64url_decode, base64url_encode

from appliance.roster import Roster
from formats.card import CardRejected, TeacherCard
from formats.keytext import b64, raw_public, unb64
from hwsim.lab import PASSPHRASE
from teacher_tools.keys import load_signing_key


def classcam(*args, module="appliance.cli"):
    env = dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """`classcam keys new` for t-ahmed, as on the teacher's computer: (directory, signing key)."""
    d = tmp_path_factory.mktemp("teacher-pc")
    run = classcam("keys", "new", "--teacher-id", "t-ahmed", "--name", "Mr Ahmed", "--dir",
                   str(d), module="teacher_tools.cli")
    assert run.returncode == 0, run.stderr
    return d, load_signing_key(d / "t-ahmed.signing.pem", PASSPHRASE)


def enrol(tmp_path, data: bytes) -> subprocess.CompletedProcess:
    """`classcam roster add` of a card file holding `data`, into an empty roster."""
    card = tmp_path / "card.json"
    card.write_bytes(data)
    roster = tmp_path / "teachers.d"
    roster.mkdir(exist_ok=True)
    return classcam("roster", "add", str(card), "--roster-dir", str(roster))


def refused(tmp_path, data: bytes, reason: str) -> None:
    run = enrol(tmp_path, data)
    assert run.returncode == 2, run.stdout
    assert run.stderr == f"classcam: {tmp_path / 'card.json'}: refused: {reason}\n"
    assert list((tmp_path / "teachers.d").iterdir()) == []


def signed(key: Ed25519PrivateKey, payload: bytes, header: dict | None = None) -> bytes:
    """A card file around `payload`, signed by `key` (as the teacher, or someone, might)."""
    token = jwt.PyJWS().encode(payload, key, algorithm="EdDSA",
                               headers=header or {"typ": "classcam-card"})
    return json.dumps({"classcam_card": 2, "jws": token}).encode()


def fields_of(key: Ed25519PrivateKey, **changes) -> dict:
    base = {"classcam_card": 2, "teacher_id": "t-ahmed", "name": "Mr Ahmed",
            "signing_key": b64(raw_public(key.public_key())),
            "recipient": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}
    return dict(base, **changes)


def test_keys_new_makes_a_card_whose_signature_covers_the_bytes_it_carries(keys):
    d, key = keys
    doc = json.loads((d / "t-ahmed.card.json").read_bytes())
    assert set(doc) == {"classcam_card", "jws"} and doc["classcam_card"] == 2
    header, payload, signature = doc["jws"].split(".")
    assert json.loads(base64url_decode(header)) == {"alg": "EdDSA", "typ": "classcam-card"}
    # The signature is Ed25519 over exactly `header.payload` as the file carries them.
    key.public_key().verify(base64url_decode(signature), f"{header}.{payload}".encode())
    fields = json.loads(base64url_decode(payload))
    assert set(fields) == {"classcam_card", "teacher_id", "name", "signing_key", "recipient"}
    card = TeacherCard.parse((d / "t-ahmed.card.json").read_bytes())
    assert (card.teacher_id, card.name, card.recipient) == \
        (fields["teacher_id"], fields["name"], fields["recipient"])
    assert Ed25519PublicKey.from_public_bytes(unb64(fields["signing_key"])) == key.public_key()


def test_a_card_signed_by_its_own_key_is_enrolled(keys, tmp_path):
    _, key = keys
    run = enrol(tmp_path, signed(key, json.dumps(fields_of(key)).encode()))
    assert run.returncode == 0 and run.stdout.startswith("enrolled t-ahmed (Mr Ahmed)"), run.stderr


def test_a_duplicate_key_in_the_signed_card_is_refused(keys, tmp_path):
    # Signed by the teacher's own key, so only the parser stands between one reader seeing
    # t-head and another t-ahmed.
    _, key = keys
    text = json.dumps(fields_of(key, teacher_id="t-head"))
    text = text[:-1] + ', "teacher_id": "t-ahmed"}'
    refused(tmp_path, signed(key, text.encode()),
            "card payload is not JSON (duplicate key 'teacher_id')")


def test_a_field_escaped_otherwise_than_signed_is_refused(keys, tmp_path):
    d, _ = keys
    doc = json.loads((d / "t-ahmed.card.json").read_bytes())
    header, payload, signature = doc["jws"].split(".")
    text = base64url_decode(payload).decode()
    assert '"Mr Ahmed"' in text
    # The same name to a JSON parser, other bytes than were signed.
    escaped = text.replace('"Mr Ahmed"', '"Mr \\u0041hmed"')
    assert json.loads(escaped) == json.loads(text)
    jws = ".".join([header, base64url_encode(escaped.encode()).decode(), signature])
    refused(tmp_path, json.dumps({"classcam_card": 2, "jws": jws}).encode(),
            "binding signature does not verify")
    # Nor can a field outside the signed bytes say something else.
    refused(tmp_path, json.dumps(dict(doc, name="Mr \u0041hmed")).encode(),
            "card must have exactly the fields ['classcam_card', 'jws']")


def test_a_duplicate_key_around_the_signed_card_is_refused(keys, tmp_path):
    d, _ = keys
    doc = json.loads((d / "t-ahmed.card.json").read_bytes())
    text = json.dumps(doc)[:-1] + ', "jws": "x.y.z"}'
    refused(tmp_path, text.encode(), "card is not JSON (duplicate key 'jws')")


@pytest.mark.parametrize("change, reason", [
    (lambda f: dict(f, teacher_id="t-ahmed\n"),
     "teacher_id 't-ahmed\\n' must be 1-64 of a-z 0-9 . _ - starting with a letter or digit"),
    (lambda f: dict(f, admin=True),
     "card must have exactly the fields ['classcam_card', 'name', 'recipient', 'signing_key', "
     "'teacher_id']"),
    (lambda f: dict(f, classcam_card=True), "unsupported card version True"),
    (lambda f: dict(f, name=float("nan")), "card payload is not JSON (NaN is not allowed)"),
])
def test_a_card_its_own_key_signed_wrong_is_refused_with_the_reason(keys, tmp_path, change,
                                                                     reason):
    _, key = keys
    refused(tmp_path, signed(key, json.dumps(change(fields_of(key))).encode()), reason)


def test_a_card_signed_by_another_key_or_algorithm_is_refused(keys, tmp_path):
    _, key = keys
    payload = json.dumps(fields_of(key)).encode()
    refused(tmp_path, signed(Ed25519PrivateKey.generate(), payload),
            "binding signature does not verify")
    # HS256 keyed with the public key: the forgery a raw-bytes, any-algorithm check accepts.
    token = jwt.PyJWS().encode(payload, raw_public(key.public_key()), algorithm="HS256",
                               headers={"typ": "classcam-card"})
    refused(tmp_path, json.dumps({"classcam_card": 2, "jws": token}).encode(),
            'jws header must be exactly {"alg": "EdDSA", "typ": "classcam-card"}')


def test_roster_add_refuses_a_teacher_id_with_a_trailing_newline_with_the_reason(keys, tmp_path):
    _, key = keys
    run = enrol(tmp_path, signed(key, json.dumps(fields_of(key, teacher_id="t-ahmed\n")).encode()))
    assert run.returncode == 2
    assert "refused: teacher_id 't-ahmed\\n' must be 1-64 of a-z 0-9" in run.stderr
    assert list((tmp_path / "teachers.d").iterdir()) == []
    assert Roster(tmp_path / "teachers.d").get("t-ahmed\n") is None
    with pytest.raises(CardRejected, match="must be 1-64"):
        TeacherCard.create("t-ahmed\n", "Mr Ahmed", key, fields_of(key)["recipient"])


def version_1_card(key: Ed25519PrivateKey, **fields) -> bytes:
    """A card as `classcam keys new` made it before version 2."""
    body = {"classcam_card": 1, "teacher_id": "t-ahmed", "name": "Mr Ahmed",
            "signing_key": b64(raw_public(key.public_key())),
            "recipient": fields_of(key)["recipient"], **fields}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = key.sign(b"classcam teacher card v1\n" + canonical.encode())
    return (json.dumps(dict(body, signature=b64(signature)), indent=2) + "\n").encode()


def test_a_version_1_card_is_refused_with_how_to_re_sign_it(keys, tmp_path):
    _, key = keys
    refused(tmp_path, version_1_card(key),
            "this is a version 1 card, whose signature does not cover the exact bytes it "
            "carries: re-sign it with `classcam keys card --card CARD --key YOUR.signing.pem` "
            "(or make new keys with `classcam keys new`)")


def test_keys_card_re_signs_a_version_1_card_with_the_teachers_own_key(keys, tmp_path):
    d, key = keys
    old = tmp_path / "old.card.json"
    old.write_bytes(version_1_card(key))
    new = tmp_path / "new.card.json"
    run = classcam("keys", "card", "--card", str(old), "--key", str(d / "t-ahmed.signing.pem"),
                   "-o", str(new), module="teacher_tools.cli")
    assert run.returncode == 0, run.stderr
    card = TeacherCard.parse(new.read_bytes())
    assert (card.teacher_id, card.name, card.signing_key) == ("t-ahmed", "Mr Ahmed",
                                                              key.public_key())
    assert card.fingerprint in run.stdout
    # Not a card made with another key, and not a v1 card changed after it was signed.
    other = tmp_path / "other.card.json"
    other.write_bytes(version_1_card(Ed25519PrivateKey.generate()))
    run = classcam("keys", "card", "--card", str(other), "--key",
                   str(d / "t-ahmed.signing.pem"), module="teacher_tools.cli")
    assert run.returncode == 2 and "the card was not made with this signing key" in run.stderr
    doc = json.loads(version_1_card(key))
    old.write_text(json.dumps(dict(doc, name="Mr Head")))
    run = classcam("keys", "card", "--card", str(old), "--key", str(d / "t-ahmed.signing.pem"),
                   module="teacher_tools.cli")
    assert run.returncode == 2 and "signature does not verify" in run.stderr
