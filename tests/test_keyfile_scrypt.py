"""Teacher signing-key files are sealed with scrypt in age's format (teacher_tools/keys.py), no
longer with PKCS#8's 2,048-iteration PBKDF2; the old files still load, with a note, and
`classcam keys reseal` brings them up to date."""
from __future__ import annotations

import base64

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teacher_tools.cli import main
from teacher_tools.keys import (MIN_SCRYPT_LOG2_N, KeyFileError, load_signing_key,
                                new_teacher_keys, scrypt_work_factor, seal_signing_key)

PASSPHRASE = "correct horse battery"


def age_stanzas(data: bytes) -> list[list[str]]:
    """The recipient stanzas of an age v1 file's header, each as its words after `->`, read
    per age's format specification (not by the code under test)."""
    header, _, _ = data.partition(b"\n---")
    lines = header.decode("ascii").split("\n")
    assert lines[0] == "age-encryption.org/v1"
    return [line[3:].split(" ") for line in lines[1:] if line.startswith("-> ")]


def test_a_new_signing_key_file_is_sealed_with_scrypt_at_the_stated_work_factor(tmp_path):
    card, files = new_teacher_keys(tmp_path, "t-evans", "Ms Evans", PASSPHRASE)
    data = files.signing_key.read_bytes()
    assert b"PRIVATE KEY" not in data and b"PBKDF2" not in data
    (stanza,) = age_stanzas(data)  # exactly one recipient: the passphrase
    kind, salt, log2_n = stanza
    assert kind == "scrypt"
    assert len(base64.b64decode(salt + "==")) == 16
    assert log2_n.isdigit() and int(log2_n) >= MIN_SCRYPT_LOG2_N
    assert scrypt_work_factor(data) == int(log2_n)
    # A standard age file: any age implementation opens it with the passphrase, to the key's
    # PKCS#8 DER, the key the card names.
    der = pyrage.passphrase.decrypt(data, PASSPHRASE)
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, Ed25519PrivateKey)
    assert key.public_key() == card.signing_key
    assert load_signing_key(files.signing_key, PASSPHRASE).public_key() == card.signing_key


def test_a_pin_sealed_key_is_scrypt_too(tmp_path):
    # hwsim/pinpad.py seals a key on the simulated pad under a short PIN with this function.
    sealed = seal_signing_key(Ed25519PrivateKey.generate(), "4321")
    assert [s[0] for s in age_stanzas(sealed)] == ["scrypt"]
    path = tmp_path / "k"
    path.write_bytes(sealed)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signing_key(path, "1234")


def test_an_old_pbkdf2_key_file_still_loads_with_a_note_and_reseals_to_scrypt(tmp_path, capsys):
    key = Ed25519PrivateKey.generate()
    old = tmp_path / "t-evans.signing.pem"
    old.write_bytes(key.private_bytes(  # how keys were sealed before
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    assert load_signing_key(old, PASSPHRASE).public_key() == key.public_key()
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "re-seal it with scrypt: classcam keys reseal --key" in note
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signing_key(old, "not the passphrase")
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    assert main(["keys", "reseal", "--key", str(old), "--passphrase-file",
                 str(tmp_path / "pass")]) == 0
    capsys.readouterr()
    assert [s[0] for s in age_stanzas(old.read_bytes())] == ["scrypt"]
    assert load_signing_key(old, PASSPHRASE).public_key() == key.public_key()
    assert capsys.readouterr().err == ""  # no note any more
