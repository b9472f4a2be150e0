"""Teacher keys and cards, and the roster that IT manages with `classcam roster`."""
from __future__ import annotations

import json
import subprocess
import sys

import jwt
import pyrage
import pytest
from jwt.utils import base64url_decode, base64url_encode

from teacher_tools.keys import KeyFileError, load_identity, load_signing_key
from appliance.roster import Roster, TeacherCard
from hwsim.lab import PASSPHRASE


def classcam(*args, env_passphrase=PASSPHRASE):
    import os
    env = dict(os.environ, CLASSCAM_PASSPHRASE=env_passphrase)
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def made_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher-pc")
    run = classcam("keys", "new", "--teacher-id", "t-ahmed", "--name", "Mr Ahmed", "--dir", str(d))
    assert run.returncode == 0, run.stderr
    return d


def test_keys_new_writes_sealed_keys_and_a_verifiable_card(made_keys):
    card = TeacherCard.parse((made_keys / "t-ahmed.card.json").read_bytes())
    assert (card.teacher_id, card.name) == ("t-ahmed", "Mr Ahmed")
    pem = (made_keys / "t-ahmed.signing.pem").read_bytes()
    assert pem.startswith(b"classcam-sealed-key/v1\nscrypt ") and b"PRIVATE KEY" not in pem
    assert b"AGE-SECRET-KEY" not in (made_keys / "t-ahmed.identity.age").read_bytes()
    assert (made_keys / "t-ahmed.signing.pem").stat().st_mode & 0o077 == 0
    # The keys open with the passphrase, and belong to the card.
    key = load_signing_key(made_keys / "t-ahmed.signing.pem", PASSPHRASE)
    assert TeacherCard.create("t-ahmed", "Mr Ahmed", key, card.recipient)[0].fingerprint == card.fingerprint
    identity = load_identity(made_keys / "t-ahmed.identity.age", PASSPHRASE)
    sealed = pyrage.encrypt(b"lesson", [pyrage.x25519.Recipient.from_str(card.recipient)])
    assert pyrage.decrypt(sealed, [identity]) == b"lesson"
    with pytest.raises(KeyFileError):
        load_signing_key(made_keys / "t-ahmed.signing.pem", "wrong passphrase")


def test_keys_new_refuses_to_overwrite(made_keys):
    run = classcam("keys", "new", "--teacher-id", "t-ahmed", "--dir", str(made_keys))
    assert run.returncode == 2 and "refusing to overwrite" in run.stderr


def test_roster_add_list_remove(made_keys, tmp_path):
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    card = made_keys / "t-ahmed.card.json"
    run = classcam("roster", "add", str(card), "--roster-dir", str(roster))
    assert run.returncode == 0 and run.stdout.startswith("enrolled t-ahmed (Mr Ahmed)")
    run = classcam("roster", "list", "--roster-dir", str(roster))
    assert run.stdout.split("\t")[:2] == ["t-ahmed", "Mr Ahmed"]
    assert classcam("roster", "remove", "t-ahmed", "--roster-dir", str(roster)).returncode == 0
    assert classcam("roster", "list", "--roster-dir", str(roster)).stdout == ""
    run = classcam("roster", "remove", "t-ahmed", "--roster-dir", str(roster))
    assert run.returncode == 2 and "not enrolled" in run.stderr


def _tampered(made_keys, resign: bool = False, **changes) -> bytes:
    """The card with `changes` to its signed fields, under the old signature, or re-signed by the
    teacher's own key (`resign`: a card its owner made wrong)."""
    doc = json.loads((made_keys / "t-ahmed.card.json").read_bytes())
    header, payload, signature = doc["jws"].split(".")
    fields = json.loads(base64url_decode(payload))
    fields.update(changes)
    payload = json.dumps(fields).encode()
    if resign:
        key = load_signing_key(made_keys / "t-ahmed.signing.pem", PASSPHRASE)
        jws = jwt.PyJWS().encode(payload, key, algorithm="EdDSA", headers={"typ": "classcam-card"})
    else:
        jws = ".".join([header, base64url_encode(payload).decode(), signature])
    return json.dumps(dict(doc, jws=jws)).encode()


@pytest.mark.parametrize("name, data, reason", [
    ("recipient swapped",
     lambda k: _tampered(k, recipient=str(pyrage.x25519.Identity.generate().to_public())),
     "binding signature does not verify"),
    ("id changed", lambda k: _tampered(k, teacher_id="t-head"), "binding signature does not verify"),
    ("extra field", lambda k: _tampered(k, resign=True, admin=True), "card must have exactly the fields"),
    ("not json", lambda k: b"\x00garbage", "card is not JSON"),
    ("bad recipient", lambda k: _tampered(k, resign=True, recipient="age1nope"),
     "recipient is not an age X25519 recipient"),
    ("version 3", lambda k: _tampered(k, resign=True, classcam_card=3), "unsupported card version 3"),
])
def test_roster_refuses_bad_cards_with_the_reason(made_keys, tmp_path, name, data, reason):
    bad = tmp_path / "bad.card.json"
    bad.write_bytes(data(made_keys))
    roster = tmp_path / "teachers.d"
    roster.mkdir()
    run = classcam("roster", "add", str(bad), "--roster-dir", str(roster))
    assert run.returncode == 2
    assert run.stderr.startswith(f"classcam: {bad}: refused: {reason}")
    assert list(roster.iterdir()) == []


def test_a_card_renamed_on_disk_to_another_teacher_is_not_trusted(tmp_path, lab_template, caplog):
    # Someone copies t-evans's valid card over t-ahmed's file: it must not be used for t-ahmed.
    (tmp_path / "t-ahmed.json").write_bytes(lab_template.key_files("t-evans").card.read_bytes())
    roster = Roster(tmp_path)
    assert roster.get("t-ahmed") is None
    assert roster.cards() == []
    assert "file name does not match teacher_id" in caplog.text
