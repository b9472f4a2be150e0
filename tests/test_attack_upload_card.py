"""What a recording waiting for upload leaves on the SD card (issue 13, item 15; P9): whoever
pulls the card must not learn who recorded when beyond what the upload needs. Every byte under
the unit's state directory is searched (the sealed files, the sidecars, `recording.json`, the
SQLite journal and its write-ahead log) for the teacher id and for the lesson's wall-clock time
in the forms a program writes it. The teacher id may appear only in `recording.json`, because
it is part of the upload address (README, "What waits on the SD card"); no time may appear.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sqlite3
import struct
import time
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.recordings import recover_interrupted
from formats.manifest import MANIFEST_FILE, SegmentEntry, open_manifest, segment_file, sidecar_file
from tests.media import identity
from uploader.spool import JOURNAL, Spool

DAY = 86400
TEACHER = "t-evans"


def wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def traces(root: Path, teacher: str, t0: float, t1: float) -> dict[str, set[str]]:
    """{file under root: what it gives away}: the teacher id, or a time within a day of the
    lesson [t0, t1] as epoch seconds (or ms, us, ns) in decimal, as a date, or as a binary
    double (outside the ciphertext, whose random bytes would match by chance)."""
    low, high = t0 - DAY, t1 + DAY
    days = {datetime.datetime.fromtimestamp(t, tz).date()
            for t in (low, t0, t1, high) for tz in (datetime.UTC, None)}
    dates = {d.strftime(f).encode() for d in days
             for f in ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%Y/%m/%d", "%d.%m.%Y")}
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        why = set()
        if teacher.encode() in data:
            why.add("teacher id")
        for run in re.findall(rb"[0-9]{10,19}", data):
            if len(run) in (10, 13, 16, 19) and low <= int(run) / 10 ** (len(run) - 10) <= high:
                why.add(f"epoch time {run.decode()}")
        why.update(f"date {d.decode()}" for d in dates if d in data)
        if not path.name.endswith(".age"):
            for offset in range(len(data) - 7):
                for form in (">d", "<d"):
                    (value,) = struct.unpack_from(form, data, offset)
                    if low <= value <= high:
                        why.add(f"binary time {value}")
        if why:
            found[str(path.relative_to(root))] = why
    return found


def test_a_recording_waiting_for_upload_says_nothing_of_who_recorded_when_beyond_its_address(
        lab):
    with lab.account() as server:
        server.faults.set("refuse")  # the account is down: the lesson waits on the card
        with lab.daemon() as unit:
            t0 = time.time()
            assert unit.lesson(TEACHER)["ok"]
            t1 = time.time()
            [recording] = lab.spooled()
            wait(lambda: (recording / MANIFEST_FILE).exists())
            wait(lambda: "cannot reach the server" in lab.journal())
            assert (lab.spool_dir / f"{JOURNAL}-wal").exists()  # searched too
            assert traces(lab.state_dir, TEACHER, t0, t1) == {
                f"spool/{recording.name}/recording.json": {"teacher id"}}

            server.faults.clear("refuse")
            unit.wait_uploaded()
            wait(lambda: not list(lab.spool_dir.glob(".discard-*")))  # shredded
            # Gone with the recording: the journal keeps no teacher id in a freed page either.
            assert traces(lab.state_dir, TEACHER, t0, t1) == {}
    # The teacher still learns when the lesson was: from the manifest, sealed to them.
    stored = lab.account_dir / TEACHER / recording.name / MANIFEST_FILE
    start = open_manifest(stored.read_bytes(), identity(lab, TEACHER)).body["start"]["wall"]
    assert t0 <= start <= t1


def test_after_a_crash_the_manifest_dates_the_lesson_from_its_first_segments_file_time(tmp_path):
    ident = pyrage.x25519.Identity.generate()
    spool = Spool(tmp_path / "spool")
    rec = spool.new_recording(TEACHER, str(ident.to_public()))
    data = os.urandom(1000)
    entry = SegmentEntry(1, segment_file(1), hashlib.sha256(data).hexdigest(), 2.5, 0.0, 2.46)
    (rec.path / sidecar_file(1)).write_text(json.dumps(entry.to_json()))
    (rec.path / segment_file(1)).write_bytes(data)
    sealed_at = time.time() - 3 * DAY   # long before this test's own time
    os.utime(rec.path / sidecar_file(1), (sealed_at, sealed_at))
    spool.close()

    after = Spool(tmp_path / "spool")  # the restart
    after.recover()
    after.reconcile()
    assert recover_interrupted(after, "unit-1", Ed25519PrivateKey.generate()) == 1
    body = open_manifest((rec.path / MANIFEST_FILE).read_bytes(), ident).body
    assert body["start"] == {"monotonic": None, "wall": sealed_at - 2.5}
    assert body["teacher_id"] == TEACHER and body["complete"] is False
    assert "start" not in json.loads((rec.path / "recording.json").read_bytes())
    after.close()


def test_a_spool_made_by_an_older_version_loses_its_teacher_ids_and_start_times(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    rid = "0123456789abcdef0123456789abcdef"
    (directory / rid).mkdir()
    start = {"monotonic": 12.5, "wall": time.time()}
    (directory / rid / "recording.json").write_text(json.dumps(
        {"recording_id": rid, "teacher_id": "t-legacy", "recipient": "age1xyz", "sequence": 1,
         "start": start}))
    (directory / rid / segment_file(1)).write_bytes(b"ciphertext")
    db = sqlite3.connect(directory / JOURNAL)   # the journal as the older version made it
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("""CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recording_id TEXT NOT NULL, teacher_id TEXT NOT NULL, name TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN
        ('sealed', 'uploading', 'confirmed', 'purged')), UNIQUE (recording_id, name))""")
    db.execute("INSERT INTO files (recording_id, teacher_id, name, size, sha256, state) VALUES "
               "(?, 't-legacy', ?, 10, ?, 'sealed')", (rid, segment_file(1), "ab" * 32))
    db.commit()
    db.close()

    spool = Spool(directory)
    spool.recover()
    try:
        [file] = spool.files()   # nothing queued is lost on the way
        assert (file.recording_id, file.teacher_id, file.name) == (rid, "t-legacy",
                                                                   segment_file(1))
        assert traces(directory, "t-legacy", start["wall"], start["wall"]) == {
            f"{rid}/recording.json": {"teacher id"}}
    finally:
        spool.close()
