"""The roster of teachers enrolled on this unit: one verified teacher card per teacher in
`teachers.d/`, named `<id>.json`. The card format is `formats/card.py`.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from formats import ids
from formats.card import MAX_CARD_BYTES, CardRejected, TeacherCard, printable
from formats.durable import atomic_write, fsync_dir

log = logging.getLogger(__name__)

__all__ = ["CardRejected", "Roster", "TeacherCard"]


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
        if not ids.is_teacher_id(teacher_id):
            return None
        path = self.directory / f"{teacher_id}.json"
        try:
            card = TeacherCard.parse(_read_card_file(path))
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
            if not ids.is_teacher_id(path.stem):
                self._log_bad(path, CardRejected("the file name is not <teacher id>.json"))
                continue
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
        if not ids.is_teacher_id(teacher_id):
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
            log.warning("roster: ignoring %s: %s", printable(path.name), error)


def _read_card_file(path: Path) -> bytes:
    """The bytes of the card file at `path`, which must be a regular file (a symlink to one is
    followed) of at most MAX_CARD_BYTES. A FIFO or a device is refused without being opened:
    reading one would block the roster, and the daemon with it."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise CardRejected("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        info = os.fstat(fd)  # what was opened, in case the path changed since the stat
        if not stat.S_ISREG(info.st_mode):
            raise CardRejected("not a regular file")
        if info.st_size > MAX_CARD_BYTES:
            raise CardRejected("card is too large")
        return f.read(MAX_CARD_BYTES + 1)
