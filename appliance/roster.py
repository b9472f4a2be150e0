"""Teacher cards and the roster of teachers enrolled on this unit.

A *teacher card* is a small JSON file made on the teacher's own computer (`classcam keys new`):

    {"classcam_card": 1, "teacher_id": "t-evans", "name": "Ms Evans",
     "signing_key": "<base64url Ed25519 public key>", "recipient": "age1...",
     "signature": "<base64url Ed25519 signature>"}

The signature, by the card's own signing key, covers every other field, so nobody can swap the
encryption recipient (P5) or the name without the teacher's key. The parser accepts exactly these
fields and nothing else. The roster is one card per teacher in `teachers.d/`, named `<id>.json`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from formats.keytext import b64, fingerprint, raw_public, unb64
from formats.durable import atomic_write, fsync_dir

log = logging.getLogger(__name__)

CARD_VERSION = 1
TEACHER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_CARD_BYTES = 4096
_DOMAIN = b"classcam teacher card v1\n"
_FIELDS = {"classcam_card", "teacher_id", "name", "signing_key", "recipient", "signature"}


class CardRejected(Exception):
    """A teacher card that must not be enrolled; `reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TeacherCard:
    """A verified teacher card: who the teacher is, the key their tokens are signed with, and the
    age recipient their recordings are encrypted to."""

    teacher_id: str
    name: str
    signing_key: Ed25519PublicKey
    recipient: str

    @classmethod
    def create(cls, teacher_id: str, name: str, signing_key: Ed25519PrivateKey,
               recipient: str) -> tuple["TeacherCard", bytes]:
        """Sign a new card; returns the card and its JSON file contents."""
        _check_id(teacher_id)
        body = _body(teacher_id, name, b64(raw_public(signing_key.public_key())), recipient)
        signature = signing_key.sign(_DOMAIN + _canonical(body))
        doc = dict(body, signature=b64(signature))
        card = cls(teacher_id, name, signing_key.public_key(), recipient)
        return card, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> "TeacherCard":
        """Parse and verify a card, or raise `CardRejected` with the reason."""
        if len(data) > MAX_CARD_BYTES:
            raise CardRejected("card is too large")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CardRejected("card is not JSON") from None
        if not isinstance(doc, dict) or set(doc) != _FIELDS:
            raise CardRejected(f"card must have exactly the fields {sorted(_FIELDS)}")
        if doc["classcam_card"] != CARD_VERSION:
            raise CardRejected(f"unsupported card version {doc['classcam_card']!r}")
        for field in _FIELDS - {"classcam_card"}:
            if not isinstance(doc[field], str):
                raise CardRejected(f"{field} must be a string")
        _check_id(doc["teacher_id"])
        if not doc["name"].strip() or len(doc["name"]) > 200:
            raise CardRejected("name must be 1 to 200 characters")
        try:
            pyrage.x25519.Recipient.from_str(doc["recipient"])
        except Exception:
            raise CardRejected("recipient is not an age X25519 recipient") from None
        try:
            key = Ed25519PublicKey.from_public_bytes(unb64(doc["signing_key"]))
            signature = unb64(doc["signature"])
        except ValueError:
            raise CardRejected("signing key or signature is not valid base64url Ed25519") from None
        body = _body(doc["teacher_id"], doc["name"], doc["signing_key"], doc["recipient"])
        try:
            key.verify(signature, _DOMAIN + _canonical(body))
        except InvalidSignature:
            raise CardRejected("binding signature does not verify") from None
        return cls(doc["teacher_id"], doc["name"], key, doc["recipient"])

    @property
    def fingerprint(self) -> str:
        """Short hex fingerprint of the signing key, for a person to compare."""
        return fingerprint(self.signing_key)


class Roster:
    """The teachers enrolled on this unit: one verified card per file in `directory`.

    Read from disk on every lookup, so a card IT adds or removes takes effect at the next token
    without restarting the daemon. A card that fails verification is skipped and logged once.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._logged_bad: set[str] = set()

    def get(self, teacher_id: str) -> TeacherCard | None:
        """The verified card of `teacher_id`, or None if that teacher is not enrolled."""
        if not TEACHER_ID.match(teacher_id):
            return None
        path = self.directory / f"{teacher_id}.json"
        try:
            card = TeacherCard.parse(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, CardRejected) as e:
            self._log_bad(path, e)
            return None
        if card.teacher_id != teacher_id:
            self._log_bad(path, CardRejected("file name does not match teacher_id"))
            return None
        return card

    def cards(self) -> list[TeacherCard]:
        """Every valid enrolled card, sorted by teacher id."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            card = self.get(path.stem)
            if card is not None:
                found.append(card)
        return found

    def add(self, data: bytes, replace: bool = False) -> TeacherCard:
        """Verify and enrol a card; refuses to silently replace another key for the same id."""
        card = TeacherCard.parse(data)
        existing = self.get(card.teacher_id)
        if existing is not None and not replace and existing.fingerprint != card.fingerprint:
            raise CardRejected(
                f"{card.teacher_id} is already enrolled with another signing key "
                "(remove it first, or use --replace)")
        atomic_write(self.directory / f"{card.teacher_id}.json", data)
        return card

    def remove(self, teacher_id: str) -> bool:
        """Unenrol `teacher_id`; returns False if they were not enrolled."""
        if not TEACHER_ID.match(teacher_id):
            return False
        try:
            (self.directory / f"{teacher_id}.json").unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True

    def _log_bad(self, path: Path, error: Exception) -> None:
        if str(path) not in self._logged_bad:
            self._logged_bad.add(str(path))
            log.warning("roster: ignoring %s: %s", path.name, error)


def _check_id(teacher_id: str) -> None:
    if not TEACHER_ID.match(teacher_id):
        raise CardRejected("teacher_id must be 1-64 of a-z 0-9 . _ - starting with a letter or digit")


def _body(teacher_id: str, name: str, signing_key: str, recipient: str) -> dict:
    return {"classcam_card": CARD_VERSION, "teacher_id": teacher_id, "name": name,
            "signing_key": signing_key, "recipient": recipient}


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()





