"""A teacher's own keys, made and kept on the teacher's own computer.

`new_teacher_keys` writes three files into a directory:

* `<id>.signing.pem` - the Ed25519 key that signs start tokens, PKCS#8 encrypted with the
  passphrase (cryptography's best available encryption);
* `<id>.identity.age` - the age X25519 identity that decrypts the teacher's recordings, itself
  encrypted with the passphrase in age's scrypt format, so `age -d` can also unlock it;
* `<id>.card.json` - the public teacher card that IT enrols on the unit.

No private key is ever written unencrypted.
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from formats.card import TeacherCard
from formats.durable import atomic_write

MIN_PASSPHRASE = 8


class KeyFileError(Exception):
    """A key file that cannot be used; the message says why."""


@dataclass(frozen=True)
class TeacherKeyFiles:
    """Where a teacher's key files are."""

    signing_key: Path
    identity: Path
    card: Path

    @classmethod
    def in_dir(cls, directory: Path, teacher_id: str) -> TeacherKeyFiles:
        return cls(directory / f"{teacher_id}.signing.pem",
                   directory / f"{teacher_id}.identity.age",
                   directory / f"{teacher_id}.card.json")


def new_teacher_keys(directory: Path, teacher_id: str, name: str, passphrase: str,
                     overwrite: bool = False) -> tuple[TeacherCard, TeacherKeyFiles]:
    """Generate a teacher's signing key and encryption identity, and their signed card."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise KeyFileError(f"passphrase must be at least {MIN_PASSPHRASE} characters")
    files = TeacherKeyFiles.in_dir(directory, teacher_id)
    existing = [p for p in (files.signing_key, files.identity, files.card) if p.exists()]
    if existing and not overwrite:
        raise KeyFileError(f"{existing[0]} exists; refusing to overwrite a teacher's key")
    signing_key = Ed25519PrivateKey.generate()
    identity = pyrage.x25519.Identity.generate()
    card, card_bytes = TeacherCard.create(teacher_id, name, signing_key,
                                          str(identity.to_public()))
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(files.signing_key, seal_signing_key(signing_key, passphrase), mode=0o600)
    atomic_write(files.identity, pyrage.passphrase.encrypt(str(identity).encode(), passphrase),
                 mode=0o600)
    atomic_write(files.card, card_bytes)
    return card, files


def seal_signing_key(key: Ed25519PrivateKey, secret: str) -> bytes:
    """The key as PKCS#8 PEM encrypted under `secret` (a passphrase or a PIN pad's PIN)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(secret.encode()))


def load_signing_key(path: Path, secret: str) -> Ed25519PrivateKey:
    """Unseal a signing key written by `seal_signing_key`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), secret.encode())
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: wrong passphrase or not a classcam signing key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def load_identity(path: Path, passphrase: str) -> pyrage.x25519.Identity:
    """Unlock the teacher's age identity (for `classcam decrypt`)."""
    data = path.read_bytes()
    try:
        text = pyrage.passphrase.decrypt(data, passphrase).decode()
    except Exception:
        # An identity may also be kept unencrypted by the teacher, as age-keygen writes it.
        text = data.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("AGE-SECRET-KEY-"):
            return pyrage.x25519.Identity.from_str(line.strip())
    raise KeyFileError(f"{path}: wrong passphrase or not an age identity")


def read_passphrase(file: Path | None, prompt: str = "Passphrase: ", confirm: bool = False) -> str:
    """The passphrase from a file, from $CLASSCAM_PASSPHRASE, or asked for on the terminal."""
    if file is not None:
        return file.read_text(encoding="utf-8").rstrip("\n")
    if "CLASSCAM_PASSPHRASE" in os.environ:
        return os.environ["CLASSCAM_PASSPHRASE"]
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Again: ") != first:
        raise KeyFileError("the passphrases differ")
    return first
