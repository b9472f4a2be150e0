"""The spool: recordings waiting on this unit for upload, one directory each, ciphertext only.

    spool = Spool(state_dir / "spool")
    rec = spool.new_recording(teacher_id, recipient)
    spool.latest()                    # the most recent recording still here
    spool.discard(rec.recording_id)   # the teacher's discard: nothing of it will be uploaded

Each recording directory holds `recording.json` (who it is for, and its order) and, from the
capture stage on, sealed segments. A directory is created under a temporary name and renamed into
place, so a crash never leaves a half-made recording.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from uploader.durable import atomic_write, fsync_dir

log = logging.getLogger(__name__)

META = "recording.json"


@dataclass(frozen=True)
class Recording:
    """A recording in the spool."""

    recording_id: str
    teacher_id: str
    recipient: str
    sequence: int
    path: Path
    start: dict  # {"monotonic": float, "wall": float} when the recording was created


class Spool:
    """Recordings on local storage, oldest to newest."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_recording(self, teacher_id: str, recipient: str) -> Recording:
        """Create the directory of a new recording, after every one already here."""
        sequence = max((r.sequence for r in self.recordings()), default=0) + 1
        recording_id = secrets.token_hex(16)
        tmp = self.directory / f".new-{recording_id}"
        tmp.mkdir(mode=0o700)
        start = {"monotonic": time.monotonic(), "wall": time.time()}
        meta = {"recording_id": recording_id, "teacher_id": teacher_id,
                "recipient": recipient, "sequence": sequence, "start": start}
        atomic_write(tmp / META, json.dumps(meta).encode(), mode=0o600)
        final = self.directory / recording_id
        os.rename(tmp, final)
        fsync_dir(self.directory)
        return Recording(recording_id, teacher_id, recipient, sequence, final, start)

    def recordings(self) -> list[Recording]:
        """Every complete recording directory, in order."""
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                meta = json.loads((path / META).read_bytes())
                found.append(Recording(meta["recording_id"], meta["teacher_id"],
                                       meta["recipient"], int(meta["sequence"]), path,
                                       meta["start"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("spool: %s is unreadable, left in place: %s", path.name, e)
        return sorted(found, key=lambda r: r.sequence)

    def latest(self) -> Recording | None:
        """The most recent recording still in the spool."""
        recordings = self.recordings()
        return recordings[-1] if recordings else None

    def discard(self, recording_id: str) -> None:
        """Delete a recording and everything in it. Files are overwritten before unlinking; on
        flash that is best effort, which is why segments only ever hold ciphertext (P4)."""
        path = self.directory / recording_id
        doomed = self.directory / f".discard-{recording_id}"
        os.rename(path, doomed)  # from here on nothing will upload it
        fsync_dir(self.directory)
        for file in doomed.rglob("*"):
            if file.is_file():
                _overwrite(file)
        shutil.rmtree(doomed)
        fsync_dir(self.directory)

    def recover(self) -> None:
        """Finish what a crash interrupted: half-made and half-discarded directories go."""
        for path in self.directory.glob(".*-*"):
            if path.name.startswith(".discard-"):
                for file in path.rglob("*"):
                    if file.is_file():
                        _overwrite(file)
            if path.name.startswith((".new-", ".discard-")):
                shutil.rmtree(path, ignore_errors=True)
        fsync_dir(self.directory)


def _overwrite(file: Path) -> None:
    size = file.stat().st_size
    with open(file, "r+b") as f:
        for _ in range(0, size, 1 << 20):
            f.write(b"\0" * min(1 << 20, size - f.tell()))
        f.flush()
        os.fsync(f.fileno())
