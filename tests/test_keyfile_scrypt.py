"""Teacher signing-key files are sealed with scrypt at a stated work factor (teacher_tools/keys.py:
N = 2^18, r = 8, p = 1, age's own parameters) and ChaCha20-Poly1305, no longer with PKCS#8's
2,048-iteration PBKDF2; the old files still load, with a note, and `classcam keys reseal` brings
them up to date."""
from __future__ import annotations

import base64
import threading
import time

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from teacher_tools.cli import main
from teacher_tools.keys import KeyFileError, load_signing_key, new_teacher_keys, seal_signing_key

PASSPHRASE = "correct horse battery"
STATED_LOG2_N = 18  # the README's and keys.py's figure


def sealed_parts(data: bytes) -> dict:
    """The fields of a sealed key, read per the format in keys.py's docstring (not by the code
    under test)."""
    lines = data.decode("ascii").split("\n")
    assert len(lines) == 5 and lines[4] == "" and lines[0] == "classcam-sealed-key/v1"
    kdf, salt, log2_n, r, p = lines[1].split(" ")
    aead, nonce = lines[2].split(" ")

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    return {"kdf": kdf, "salt": unb64(salt), "log2_n": int(log2_n), "r": int(r), "p": int(p),
            "aead": aead, "nonce": unb64(nonce), "ciphertext": unb64(lines[3]),
            "header": "\n".join(lines[:3]).encode() + b"\n"}


def test_a_new_signing_key_file_is_sealed_with_scrypt_at_the_stated_work_factor(tmp_path):
    card, files = new_teacher_keys(tmp_path, "t-evans", "Ms Evans", PASSPHRASE)
    data = files.signing_key.read_bytes()
    assert b"PRIVATE KEY" not in data and b"PBKDF2" not in data
    parts = sealed_parts(data)
    assert (parts["kdf"], parts["log2_n"], parts["r"], parts["p"]) == ("scrypt", STATED_LOG2_N,
                                                                       8, 1)
    assert parts["aead"] == "chacha20poly1305"
    assert len(parts["salt"]) == 16 and len(parts["nonce"]) == 12
    # Opened with nothing but the stated parameters and the passphrase, by the library: the
    # key the card names.
    kek = Scrypt(salt=parts["salt"], length=32, n=2 ** STATED_LOG2_N, r=8, p=1).derive(
        PASSPHRASE.encode())
    der = ChaCha20Poly1305(kek).decrypt(parts["nonce"], parts["ciphertext"], parts["header"])
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, Ed25519PrivateKey) and key.public_key() == card.signing_key
    # The parameters are bound: a header saying a cheaper N does not open with the same bytes.
    cheaper = parts["header"].replace(b" 18 8 1", b" 15 8 1")
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(kek).decrypt(parts["nonce"], parts["ciphertext"], cheaper)
    forged = tmp_path / "forged"
    forged.write_bytes(data.replace(b" 18 8 1", b" 15 8 1"))
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signing_key(forged, PASSPHRASE)


def test_unsealing_leaves_other_threads_running(tmp_path):
    # An event loop may unseal in a thread (the simulated pad does): the KDF must not hold
    # Python's lock for its second of work.
    path = tmp_path / "k"
    path.write_bytes(seal_signing_key(Ed25519PrivateKey.generate(), PASSPHRASE))
    worker = threading.Thread(target=load_signing_key, args=(path, PASSPHRASE))
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.monotonic())
        time.sleep(0.01)
    worker.join()
    assert len(ticks) > 10 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.2


def test_a_short_secret_sealed_key_is_scrypt_too_and_refuses_the_wrong_one(tmp_path):
    # The seal does not depend on the secret's length (the pad's own keystore is pinpad/keystore.py).
    sealed = seal_signing_key(Ed25519PrivateKey.generate(), "4321")
    assert sealed_parts(sealed)["kdf"] == "scrypt"
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
    assert sealed_parts(old.read_bytes())["log2_n"] == STATED_LOG2_N
    assert load_signing_key(old, PASSPHRASE).public_key() == key.public_key()
    assert capsys.readouterr().err == ""  # no note any more
