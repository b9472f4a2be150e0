"""The spool: recordings waiting on this unit for upload, ciphertext only, and a crash-safe
record of how far each file has got.

    spool = Spool(state_dir / "spool")
    spool.recover()                               # after any crash, before anything else
    rec = spool.new_recording(teacher_id, recipient)
    made, newest = spool.newest()                 # the last recording, if still here
    spool.add(rec, "seg-000001.ts.age", sha256)   # a sealed file, queued for upload
    f = spool.next_sealed()                       # the oldest file not yet confirmed
    sending = spool.begin_send(f)                 # UPLOADING; None if it was discarded
    ...; spool.confirm(f, sha256_the_server_stored); spool.end_send(sending)

Each recording is a directory holding `recording.json` (its id, the teacher id its upload address
needs, the teacher's recipient a manifest is sealed to after a crash, and its order), its sealed
files (`seg-NNNNNN.ts.age`, `manifest.age`) and the segments' manifest entries. Nothing on the
card says when a recording was made (P9): its start time is kept in memory for the manifest, and
after a crash it is read back from the first segment's own file time. Every file moves through
one enum, kept in an SQLite journal (WAL, synchronous=FULL: a committed transition survives a
power cut) that names files by recording id, never by teacher:

    sealed -> uploading -> confirmed -> purged

There is no failed state: a file stays sealed until the server has confirmed its hash, however
long that takes, and only a confirmed file is deleted (P7). A recording's directory goes once its
manifest is purged. The files on disk are the truth about what is sealed; `recover()` brings the
journal into line with them after a crash.

A recording taken out (discarded, or finished) is renamed out of sight at once; its files are
overwritten and deleted only once the uploader has let go of them, by exactly one thread.
"""
from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from formats.durable import atomic_write, fsync_dir, sha256_file

log = logging.getLogger(__name__)

META = "recording.json"
JOURNAL = "journal.db"
MANIFEST = "manifest.age"
SEGMENT_GLOB = "seg-*.ts.age"
# How long a discard waits for a send of the same recording to stop (at its next block, or when
# the server answers), so that it can say whether that file reached the account.
DISCARD_WAIT_S = 60.0


class FileState(enum.StrEnum):
    """How far a sealed file has got. There is deliberately no failure state."""

    SEALED = "sealed"          # on disk, not yet confirmed by the server
    UPLOADING = "uploading"    # being sent; after a crash it is sealed again (and resumed)
    CONFIRMED = "confirmed"    # the server stored exactly these bytes; safe to delete
    PURGED = "purged"          # deleted here; remembered until its recording is gone


@dataclass(frozen=True)
class Recording:
    """A recording in the spool."""

    recording_id: str
    teacher_id: str
    recipient: str
    sequence: int
    path: Path
    # {"monotonic": float, "wall": float} when it was created: in memory only, never on the card
    # (None for a recording read back from the disk, which is the same recording).
    start: dict | None = field(default=None, compare=False)
    # The unit's `[audio] mode` it is recorded in, kept with it so that a manifest written after
    # a crash says it too (None: not said, as in a recording made before it was kept).
    audio_mode: str | None = None


@dataclass(frozen=True)
class SpoolFile:
    """A sealed file of a recording, and how far it has got."""

    seq: int  # the order files were sealed in: oldest first
    recording_id: str
    teacher_id: str
    name: str
    size: int
    sha256: str
    state: FileState
    path: Path


@dataclass(frozen=True)
class Backlog:
    """What is waiting to be uploaded."""

    files: int
    bytes: int


class Sending:
    """A file the uploader holds open to send it (`Spool.begin_send`). `withdrawn` is set when
    the teacher discards its recording meanwhile: the uploader then sends no further byte of it
    and lets go (`Spool.end_send`)."""

    def __init__(self, file: SpoolFile):
        self.file = file
        self.withdrawn = threading.Event()
        self.stored = False               # the server confirmed its hash during this send
        self._ended = threading.Event()

    def wait_ended(self, timeout: float) -> bool:
        """Wait until the uploader has let go of the file; False if `timeout` passed first."""
        return self._ended.wait(timeout)


class Spool:
    """Recordings on local storage, oldest to newest, and their files' upload states.
    Safe to use from several threads (capture, uploader, the daemon's loop)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._teachers: dict[str, str] = {}       # recording id -> teacher id, from recording.json
        self._sending: dict[int, Sending] = {}    # seq -> the send holding that file open
        self._doomed: dict[str, Path] = {}        # taken out; shredded when its send ends
        self._db = sqlite3.connect(directory / JOURNAL, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Deleted records are overwritten, not left in free pages for whoever reads the card.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(f"CREATE TABLE IF NOT EXISTS files ({_FILES_COLUMNS})")
        self._drop_teacher_ids()
        # The sequence number of the newest recording ever made here, so "the last recording"
        # stays that one after it has left the spool.
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, "
                         "value INTEGER NOT NULL)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- recordings ---------------------------------------------------------------------------

    def new_recording(self, teacher_id: str, recipient: str,
                      audio_mode: str | None = None) -> Recording:
        """Create the directory of a new recording, after every one made before."""
        with self._lock:
            sequence = max([r.sequence for r in self.recordings()] + [self._last_sequence()]) + 1
            self._db.execute("INSERT OR REPLACE INTO counters VALUES ('last_sequence', ?)",
                             (sequence,))
        recording_id = secrets.token_hex(16)  # random: it says nothing of when or who
        tmp = self.directory / f".new-{recording_id}"
        tmp.mkdir(mode=0o700)
        start = {"monotonic": time.monotonic(), "wall": time.time()}
        meta = {"recording_id": recording_id, "teacher_id": teacher_id,
                "recipient": recipient, "sequence": sequence}
        if audio_mode is not None:
            meta["audio_mode"] = audio_mode
        atomic_write(tmp / META, json.dumps(meta).encode(), mode=0o600)
        final = self.directory / recording_id
        os.rename(tmp, final)
        fsync_dir(self.directory)
        with self._lock:
            self._teachers[recording_id] = teacher_id
        return Recording(recording_id, teacher_id, recipient, sequence, final, start,
                         audio_mode)

    def recordings(self) -> list[Recording]:
        """Every complete recording directory, in order."""
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                meta = json.loads((path / META).read_bytes())
                mode = meta.get("audio_mode")
                found.append(Recording(meta["recording_id"], meta["teacher_id"],
                                       meta["recipient"], int(meta["sequence"]), path,
                                       audio_mode=mode if isinstance(mode, str) else None))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("spool: %s is unreadable, left in place: %s", path.name, e)
        with self._lock:
            self._teachers.update((r.recording_id, r.teacher_id) for r in found)
        return sorted(found, key=lambda r: r.sequence)

    def newest(self) -> tuple[bool, Recording | None]:
        """Whether any recording was ever made here, and the newest one made if it is still in
        the spool (None once it has been uploaded, discarded or removed)."""
        recordings = self.recordings()
        last = self._last_sequence()
        if recordings and recordings[-1].sequence >= last:
            return True, recordings[-1]
        return last > 0, None

    def discard(self, recording_id: str, wait_s: float = DISCARD_WAIT_S) -> int:
        """The teacher's discard: nothing more of the recording is uploaded, and everything of it
        here is overwritten and deleted (on flash that is best effort, which is why it only ever
        holds ciphertext, P4). A file being sent is cut off at its next block; this waits (up to
        `wait_s`) for that send to end. Returns how many of its files the server has, counting
        one whose send won the race."""
        with self._lock:
            sends = [s for s in self._sending.values() if s.file.recording_id == recording_id]
            in_flight = [s.file.seq for s in sends]
            uploaded = self._db.execute(
                "SELECT COUNT(*) FROM files WHERE recording_id = ? AND state IN (?, ?) "
                f"AND seq NOT IN ({','.join('?' * len(in_flight))})",
                (recording_id, FileState.CONFIRMED, FileState.PURGED, *in_flight)).fetchone()[0]
            for sending in sends:
                sending.withdrawn.set()
            doomed = self._take_out(recording_id)
        deadline = time.monotonic() + wait_s
        for sending in sends:
            sending.wait_ended(max(0.0, deadline - time.monotonic()))
        uploaded += sum(1 for s in sends if s.stored)
        self._shred_when_free(recording_id, doomed)
        self._notify()
        return uploaded

    def forget(self, recording_id: str) -> None:
        """Remove a recording that holds nothing worth keeping (it never sealed a segment)."""
        self._remove(recording_id)

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (on the calling thread) whenever a file is queued or a recording
        is discarded."""
        self._listeners.append(listener)

    def add(self, recording: Recording, name: str, sha256: str) -> None:
        """Queue a sealed file of `recording` for upload (a no-op if it is already known)."""
        size = (recording.path / name).stat().st_size
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO files (recording_id, name, size, sha256, state)"
                " VALUES (?, ?, ?, ?, ?)",
                (recording.recording_id, name, size, sha256, FileState.SEALED))
        self._notify()

    def next_sealed(self, skip: frozenset[int] = frozenset()) -> SpoolFile | None:
        """The oldest file still waiting for upload, leaving out the files in `skip`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM files WHERE state IN (?, ?) ORDER BY seq",
                (FileState.SEALED, FileState.UPLOADING)).fetchall()
        for row in rows:
            if row[0] not in skip:
                return self._file(row)
        return None

    def mark(self, file: SpoolFile, state: FileState) -> None:
        """Record that `file` is being sent (UPLOADING) or is waiting again (SEALED)."""
        if state not in (FileState.SEALED, FileState.UPLOADING):
            raise ValueError("use confirm() and purge()")
        self._set(file, state)

    def begin_send(self, file: SpoolFile) -> Sending | None:
        """Record that `file` is being sent (UPLOADING) and held open until `end_send`; None if
        its recording was taken out meanwhile (send nothing)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM files WHERE seq = ?",
                                (file.seq,)).fetchone() is None:
                return None
            self._set(file, FileState.UPLOADING)
            sending = self._sending[file.seq] = Sending(file)
            return sending

    def end_send(self, sending: Sending) -> None:
        """The uploader no longer reads the file. If its recording was taken out and nobody
        waits to shred it, it is shredded now."""
        rid = sending.file.recording_id
        with self._lock:
            self._sending.pop(sending.file.seq, None)
            sending._ended.set()
            doomed = None if self._open(rid) else self._doomed.pop(rid, None)
        if doomed is not None:
            _shred(doomed)
            fsync_dir(self.directory)

    def confirm(self, file: SpoolFile, stored_sha256: str) -> bool:
        """The server says it stored `stored_sha256`: if that is the file's own hash, record it
        as confirmed and delete the local copy. Returns False (and keeps the file) otherwise."""
        if stored_sha256 != file.sha256:
            return False
        with self._lock:
            sending = self._sending.get(file.seq)
            if sending is not None:
                sending.stored = True
            if self._db.execute("SELECT 1 FROM files WHERE seq = ?",
                                (file.seq,)).fetchone() is None:
                return True  # its recording was taken out meanwhile: nothing here to delete
            self._set(file, FileState.CONFIRMED)
        self.purge(file)
        return True

    def purge(self, file: SpoolFile) -> None:
        """Delete a confirmed file's local copy; once a recording's manifest is purged, the
        recording goes altogether."""
        file.path.unlink(missing_ok=True)
        if file.path.parent.exists():
            fsync_dir(file.path.parent)
        self._set(file, FileState.PURGED)
        if file.name == MANIFEST:
            self._finish(file.recording_id)

    def files(self, recording_id: str | None = None) -> list[SpoolFile]:
        """Every file the journal knows (of one recording, or of all), oldest first."""
        with self._lock:
            if recording_id is None:
                rows = self._db.execute("SELECT * FROM files ORDER BY seq").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM files WHERE recording_id = ? ORDER BY seq",
                                        (recording_id,)).fetchall()
        return [self._file(r) for r in rows]

    def backlog(self) -> Backlog:
        """How many files, and bytes, are not yet confirmed."""
        with self._lock:
            files, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE state IN (?, ?)",
                (FileState.SEALED, FileState.UPLOADING)).fetchone()
        return Backlog(files, size)

    def used_bytes(self) -> int:
        """Bytes the sealed recordings still here take (read from the journal, so it costs the
        same however long the backlog; the segment being written is not counted, which is what
        the capture chain's `min_free_mb` margin is for)."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE state != ?",
                                    (FileState.PURGED,)).fetchone()[0]

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a crash interrupted: half-made and half-discarded directories go. (And a
        recording made by an older version loses the start time it kept on the card.)"""
        for path in self.directory.glob(".*-*"):
            if path.name.startswith((".new-", ".discard-")):
                _shred(path)
        for meta in self.directory.glob(f"[!.]*/{META}"):
            try:
                fields = json.loads(meta.read_bytes())
                if isinstance(fields, dict) and "start" in fields:
                    del fields["start"]
                    atomic_write(meta, json.dumps(fields).encode(), mode=0o600)
            except (OSError, ValueError) as e:
                log.error("spool: %s is unreadable, left in place: %s", meta.parent.name, e)
        fsync_dir(self.directory)

    def reconcile(self, hashed: Callable[[int], None] = lambda size: None) -> None:
        """Bring the journal into line with the files after a crash: a sealed file it does not
        know is queued; a send that was cut off is sealed again (it resumes); a confirmed file
        still on disk is purged; a finished recording whose manifest is purged goes.
        Only a file the journal does not know is read (to hash it; one the journal knows keeps
        the hash it was sealed with), so this costs the same however much waits for upload;
        `hashed(size)` is called after each file read, for a caller showing progress."""
        recordings = {r.recording_id: r for r in self.recordings()}
        with self._lock:
            placeholders = ",".join("?" * len(recordings))  # only "?"s: values stay bound
            self._db.execute(f"DELETE FROM files WHERE recording_id NOT IN ({placeholders})",
                             tuple(recordings))
            self._db.execute("UPDATE files SET state = ? WHERE state = ?",
                             (FileState.SEALED, FileState.UPLOADING))
            known = set(self._db.execute("SELECT recording_id, name FROM files").fetchall())
        for rec in recordings.values():
            for path in sorted(rec.path.glob(SEGMENT_GLOB)) + [rec.path / MANIFEST]:
                if (rec.recording_id, path.name) not in known and path.exists():
                    self.add(rec, path.name, sha256_file(path))
                    hashed(path.stat().st_size)
        for file in self.files():
            if file.state is FileState.CONFIRMED:
                self.purge(file)
            elif file.state is FileState.SEALED and not file.path.exists():
                log.error("spool: a sealed file is missing from the disk and cannot be sent")
                with self._lock:
                    self._db.execute("DELETE FROM files WHERE seq = ?", (file.seq,))
        for file in self.files():
            if file.name == MANIFEST and file.state is FileState.PURGED:
                self._finish(file.recording_id)

    def knows(self, recording_id: str, name: str) -> bool:
        """Whether the journal has `name` of `recording_id` (sealed, sent or purged)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM files WHERE recording_id = ? AND name = ?",
                                    (recording_id, name)).fetchone() is not None

    # -- helpers ------------------------------------------------------------------------------

    def _last_sequence(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = 'last_sequence'").fetchone()
        return row[0] if row else 0

    def _set(self, file: SpoolFile, state: FileState) -> None:
        with self._lock:
            self._db.execute("UPDATE files SET state = ? WHERE seq = ?", (state, file.seq))

    def _finish(self, recording_id: str) -> None:
        """Every file of the recording reached the account: its directory and records go."""
        with self._lock:
            waiting = self._db.execute(
                "SELECT COUNT(*) FROM files WHERE recording_id = ? AND state != ?",
                (recording_id, FileState.PURGED)).fetchone()[0]
        if not waiting:
            self._remove(recording_id)

    def _remove(self, recording_id: str) -> None:
        """Take a recording out of the spool, and shred it once nothing holds it open."""
        with self._lock:
            doomed = self._take_out(recording_id)
        self._shred_when_free(recording_id, doomed)

    def _take_out(self, recording_id: str) -> Path | None:
        """(Under the lock.) The rename is the moment a recording is gone: after it nothing
        uploads it and a crash leaves only a `.discard-` directory for `recover()` to finish; the
        journal's records go after it, so a crash in between cannot queue it again. Returns the
        renamed directory, to be shredded by the caller: only the thread that renamed it has it,
        so two removals of one recording shred it once."""
        path = self.directory / recording_id
        doomed = self.directory / f".discard-{recording_id}"
        renamed = False
        if path.exists():
            os.rename(path, doomed)
            fsync_dir(self.directory)
            renamed = True
        self._db.execute("DELETE FROM files WHERE recording_id = ?", (recording_id,))
        self._teachers.pop(recording_id, None)
        return doomed if renamed else None

    def _shred_when_free(self, recording_id: str, doomed: Path | None) -> None:
        """Shred `doomed` now, or, while the uploader still reads one of its files, leave that
        to `end_send`: overwriting a file being sent would send zeros."""
        if doomed is None:
            return
        with self._lock:
            if self._open(recording_id):
                self._doomed[recording_id] = doomed
                return
        _shred(doomed)
        fsync_dir(self.directory)

    def _open(self, recording_id: str) -> bool:
        return any(s.file.recording_id == recording_id for s in self._sending.values())

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _teacher(self, recording_id: str) -> str:
        """The teacher id of a recording (its upload address), from its `recording.json`."""
        with self._lock:
            teacher = self._teachers.get(recording_id)
        if teacher is None:
            try:
                teacher = str(json.loads((self.directory / recording_id / META)
                                         .read_bytes())["teacher_id"])
            except (OSError, ValueError, KeyError, TypeError):
                return ""  # taken out meanwhile: nothing will be sent
            with self._lock:
                self._teachers[recording_id] = teacher
        return teacher

    def _drop_teacher_ids(self) -> None:
        """A journal made by an older version named each file's teacher: rewrite it without."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(files)")]
        if "teacher_id" not in columns:
            return
        self._db.executescript(f"""BEGIN IMMEDIATE;
            CREATE TABLE files_new ({_FILES_COLUMNS});
            INSERT INTO files_new (seq, recording_id, name, size, sha256, state)
                SELECT seq, recording_id, name, size, sha256, state FROM files;
            DROP TABLE files;
            ALTER TABLE files_new RENAME TO files;
            COMMIT;""")
        # Rewrite the file and empty the write-ahead log: no old page keeps a teacher id.
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _file(self, row: tuple) -> SpoolFile:
        seq, recording_id, name, size, sha256, state = row
        return SpoolFile(seq, recording_id, self._teacher(recording_id), name, size, sha256,
                         FileState(state), self.directory / recording_id / name)


_FILES_COLUMNS = """
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sealed', 'uploading', 'confirmed', 'purged')),
    UNIQUE (recording_id, name)"""


def _shred(path: Path) -> None:
    """Overwrite every file under `path`, then delete it all."""
    if not path.exists():
        return
    for file in path.rglob("*"):
        if file.is_file():
            _overwrite(file)
    shutil.rmtree(path)


def _overwrite(file: Path) -> None:
    size = file.stat().st_size
    with open(file, "r+b") as f:
        for _ in range(0, size, 1 << 20):
            f.write(b"\0" * min(1 << 20, size - f.tell()))
        f.flush()
        os.fsync(f.fileno())
