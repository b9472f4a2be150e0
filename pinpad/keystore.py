"""The pad's keystore: the teachers enrolled on this pad, each under a short teacher number,
with their card and, for a teacher without a security key, their signing key sealed under their
PIN.

    store = Keystore(Path("/var/lib/classcam-pinpad"))
    number = store.enrol(card_bytes, signing_key=key, pin="482913")   # IT, once
    key = store.unlock(number, "482913")      # the pad, at each start; raises PadRefusal

Sealing: the 32-byte Ed25519 private key is encrypted with AES-256-GCM under a key derived from
the PIN by Argon2id (RFC 9106's second recommended setting: 64 MiB, 3 passes, 4 lanes; a fresh
16-byte salt per seal), the teacher's id and number bound in as associated data.

Wrong PINs: each try is counted durably (written and fsynced) BEFORE the key derivation runs,
so killing the pad in the middle of a try still counts it; a right PIN sets the count back to 0.
After `MAX_WRONG_PINS` wrong PINs in a row the key stays locked, across restarts, until IT
runs `classcam-pinpad reset`. This stops guessing AT the pad only: whoever copies the keystore
(a stolen SD card) can search all PINs offline; see README, "The pad's threat model".

Layout (the directory 0700, every file 0600, owned by the pad's user):

    <root>/<number>/card.json     the teacher card, byte for byte as enrolled
    <root>/<number>/key.sealed    JSON: the sealed signing key and the KDF's parameters
    <root>/<number>/wrong_pins    the count of tries since the last right PIN, in decimal
"""
from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from formats.card import TeacherCard
from formats.durable import atomic_write

MIN_PIN_DIGITS = 6
MAX_PIN_DIGITS = 12
MAX_WRONG_PINS = 5
MAX_NUMBER = 999
# Argon2id, RFC 9106 section 4, second recommended option (for memory-constrained machines: a Pi
# 4 with 1 GB is one). Stored with each sealed key, so a later change still opens old keys.
KDF = {"kdf": "argon2id", "memory_kib": 64 * 1024, "iterations": 3, "lanes": 4}
_SALT_BYTES = 16
_NONCE_BYTES = 12


class PadRefusal(Exception):
    """The pad will not sign: `reason` is what the teacher is told (and the tests read)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Teacher:
    """One teacher on the pad: their number, their card, and whether the pad holds their key
    (else the card names a security key's credential)."""

    number: int
    card: TeacherCard
    card_bytes: bytes
    key_on_pad: bool
    wrong_pins: int

    @property
    def locked(self) -> bool:
        return self.key_on_pad and self.wrong_pins >= MAX_WRONG_PINS


class Keystore:
    """The teachers on this pad, in `root`."""

    def __init__(self, root: Path):
        self.root = root

    def teachers(self) -> list[Teacher]:
        """Every enrolled teacher, by number."""
        if not self.root.is_dir():
            return []
        numbers = sorted(int(p.name) for p in self.root.iterdir()
                         if p.name.isdigit() and (p / "card.json").is_file())
        return [self.teacher(n) for n in numbers]

    def teacher(self, number: int) -> Teacher:
        """The teacher with this number; `PadRefusal` if there is none."""
        directory = self._dir(number)
        try:
            card_bytes = (directory / "card.json").read_bytes()
        except FileNotFoundError:
            raise PadRefusal(f"no teacher {number} on this pad") from None
        return Teacher(number, TeacherCard.parse(card_bytes), card_bytes,
                       (directory / "key.sealed").exists(), self._wrong_pins(number))

    def number_of(self, teacher: str) -> int:
        """The number of a teacher given by id or by number (as IT types it)."""
        if teacher.isdigit():
            return self.teacher(int(teacher)).number
        for t in self.teachers():
            if t.card.teacher_id == teacher:
                return t.number
        raise PadRefusal(f"{teacher} is not on this pad")

    def enrol(self, card_bytes: bytes, signing_key: Ed25519PrivateKey | None, pin: str | None,
              number: int | None = None) -> int:
        """Add a teacher (IT). With `signing_key`, the pad keeps it sealed under `pin`, which
        must be `MIN_PIN_DIGITS` to `MAX_PIN_DIGITS` digits; without, the card must name a
        security key. Returns the teacher's number (the lowest free one unless given)."""
        card = TeacherCard.parse(card_bytes)
        if signing_key is not None:
            check_pin(pin)
            if _raw(signing_key.public_key()) != _raw(card.signing_key):
                raise PadRefusal("the signing key is not the one in the card")
        elif card.security_key is None:
            raise PadRefusal("the card names no security key: give the teacher's signing key")
        if any(t.card.teacher_id == card.teacher_id for t in self.teachers()):
            raise PadRefusal(f"{card.teacher_id} is on this pad already")
        taken = {t.number for t in self.teachers()}
        if number is None:
            number = min(set(range(1, MAX_NUMBER + 1)) - taken)
        if not 1 <= number <= MAX_NUMBER or number in taken:
            raise PadRefusal(f"teacher number {number} is taken or not 1-{MAX_NUMBER}")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = self._dir(number)
        directory.mkdir(mode=0o700)
        self._write(directory / "wrong_pins", b"0")
        if signing_key is not None:
            assert pin is not None
            self._write(directory / "key.sealed", _seal(signing_key, pin, card.teacher_id, number))
        self._write(directory / "card.json", card_bytes)  # last: its presence enrols
        return number

    def unlock(self, number: int, pin: str) -> Ed25519PrivateKey:
        """The teacher's signing key, if `pin` is right and the key is not locked. The try is
        counted durably before the PIN is checked. Raises `PadRefusal`."""
        teacher = self.teacher(number)
        if not teacher.key_on_pad:
            raise PadRefusal("this teacher's key is on their security key")
        if teacher.wrong_pins >= MAX_WRONG_PINS:
            raise PadRefusal("locked after too many wrong PINs: ask IT")
        self._set_wrong_pins(number, teacher.wrong_pins + 1)
        sealed = (self._dir(number) / "key.sealed").read_bytes()
        try:
            key = _unseal(sealed, pin, teacher.card.teacher_id, number)
        except (InvalidTag, ValueError):
            raise PadRefusal("wrong PIN") from None
        self._set_wrong_pins(number, 0)
        return key

    def reset(self, number: int) -> None:
        """IT: unlock a teacher's key after too many wrong PINs."""
        self.teacher(number)
        self._set_wrong_pins(number, 0)

    def remove(self, number: int) -> None:
        """IT: take a teacher off the pad (their sealed key with them)."""
        directory = self._dir(number)
        (directory / "card.json").unlink()  # first: the teacher is gone even if the rest stays
        for name in ("key.sealed", "wrong_pins"):
            (directory / name).unlink(missing_ok=True)
        directory.rmdir()

    def _dir(self, number: int) -> Path:
        return self.root / str(number)

    def _wrong_pins(self, number: int) -> int:
        try:
            return int((self._dir(number) / "wrong_pins").read_text())
        except FileNotFoundError:
            return 0
        except ValueError:  # a torn or tampered counter counts as locked
            return MAX_WRONG_PINS

    def _set_wrong_pins(self, number: int, count: int) -> None:
        self._write(self._dir(number) / "wrong_pins", str(count).encode())

    def _write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data, mode=0o600)
        _own_like(self.root, path)


def check_pin(pin: str | None) -> str:
    """`pin` if it is an acceptable PIN for a pad-held key, else `PadRefusal`."""
    if pin is None or not pin.isascii() or not pin.isdigit():
        raise PadRefusal("a PIN is digits only")
    if not MIN_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS:
        raise PadRefusal(f"a PIN has {MIN_PIN_DIGITS} to {MAX_PIN_DIGITS} digits")
    return pin


def derive(pin: str, salt: bytes, params: dict = KDF) -> bytes:
    """The 32-byte sealing key for `pin`: one guess's worth of work."""
    if params.get("kdf") != "argon2id":
        raise ValueError("unknown KDF")
    return Argon2id(salt=salt, length=32, iterations=int(params["iterations"]),
                    lanes=int(params["lanes"]),
                    memory_cost=int(params["memory_kib"])).derive(pin.encode())


def _seal(key: Ed25519PrivateKey, pin: str, teacher_id: str, number: int) -> bytes:
    salt, nonce = secrets.token_bytes(_SALT_BYTES), secrets.token_bytes(_NONCE_BYTES)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    sealed = AESGCM(derive(pin, salt)).encrypt(nonce, raw, _bound(teacher_id, number))
    return json.dumps({**KDF, "salt": _b64(salt), "nonce": _b64(nonce),
                       "sealed": _b64(sealed)}).encode()


def _unseal(data: bytes, pin: str, teacher_id: str, number: int) -> Ed25519PrivateKey:
    fields = json.loads(data)
    params = {k: fields[k] for k in KDF}
    raw = AESGCM(derive(pin, base64.b64decode(fields["salt"]), params)).decrypt(
        base64.b64decode(fields["nonce"]), base64.b64decode(fields["sealed"]),
        _bound(teacher_id, number))
    return Ed25519PrivateKey.from_private_bytes(raw)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _bound(teacher_id: str, number: int) -> bytes:
    return f"classcam-pinpad v1\n{teacher_id}\n{number}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _own_like(root: Path, path: Path) -> None:
    """Give a file IT wrote as root to the keystore's owner (the pad's user)."""
    st = root.stat()
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(path, st.st_uid, st.st_gid)
        os.chown(path.parent, st.st_uid, st.st_gid)
