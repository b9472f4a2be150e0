"""Bookmarks: the pad's `mark` while recording notes the moment in the encrypted manifest only,
and `classcam decrypt` makes the marks chapters of lesson.mp4 that ffprobe (and so a player)
reads back at the marked times."""
from __future__ import annotations

import json
import subprocess
import time

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.padlink import MalformedMessage, parse_message
from formats.manifest import (MANIFEST_FILE, ManifestRejected, open_manifest, seal,
                              write_manifest)
from hwsim.capture import read_counter
from teacher_tools.decrypt import decrypt_recording
from tests.media import identity, recording_dirs
from tests.padclient import PadClient

FPS = 25


def _chapters(path) -> list[dict]:
    return json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60).stdout)["chapters"]


def test_three_marks_become_chapters_at_the_marked_times_and_stay_in_the_manifest(unit, lab,
                                                                                   tmp_path):
    pad = PadClient(lab.pad_socket)
    try:
        pad.send({"type": "mark"})
        assert pad.receive("result") == {"type": "result", "ok": False, "reason": "not recording"}
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("recording")
        for _ in range(3):
            time.sleep(0.7)  # the lesson goes on between the teacher's marks
            pad.send({"type": "mark"})
            assert pad.receive("result") == {"type": "result", "ok": True, "reason": "marked"}
        time.sleep(0.5)
        unit.control("press")
        unit.wait_state("idle")
        pad.send({"type": "mark"})  # after the stop: nothing to mark
        assert pad.receive("result") == {"type": "result", "ok": False, "reason": "not recording"}
    finally:
        pad.close()

    marked = [e["seconds"] for e in lab.timeline() if e["ev"] == "bookmark"]
    assert len(marked) == 3 and marked == sorted(marked) and marked[0] > 0
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert manifest.bookmarks == marked

    out = tmp_path / "lesson.mp4"
    decrypt_recording(rec, identity(lab), out, known=None, trust_new_unit=True)
    chapters = _chapters(out)
    assert [c["tags"]["title"] for c in chapters] == ["Start", "Bookmark 1", "Bookmark 2",
                                                      "Bookmark 3"]
    starts = [float(c["start_time"]) for c in chapters]
    assert starts[0] == 0.0
    for start, seconds in zip(starts[1:], marked, strict=True):
        assert abs(start - seconds) <= 1 / FPS
    # Each chapter ends where the next begins; the last at the end of the lesson.
    assert [float(c["end_time"]) for c in chapters[:-1]] == starts[1:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        times = []
        for frame in container.decode(video=0):
            assert frame.pts is not None
            times.append((float(frame.pts * stream.time_base), read_counter(
                frame.to_ndarray(format="bgr24"))))
    assert abs(float(chapters[-1]["end_time"]) - (times[-1][0] + 1 / FPS)) <= 1 / FPS
    # The frame a chapter opens on is the frame the camera was taking when the teacher marked.
    for start, seconds in zip(starts[1:], marked, strict=True):
        first = next(counter for t, counter in times if t >= start - 1e-3)
        assert abs(first - seconds * FPS) <= 1


def test_marks_are_nowhere_but_in_the_encrypted_manifest(unit, lab):
    pad = PadClient(lab.pad_socket)
    try:
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("recording")
        for _ in range(2):
            pad.send({"type": "mark"})
            assert pad.receive("result")["ok"]
        unit.control("press")
        unit.wait_state("idle")
        # A line the daemon does write, after the marks: once it is in the journal, so would
        # be anything the marks had written (lines are held until the health tick).
        pad.send({"type": "nonsense"})
        assert not pad.receive("result")["ok"]
        unit.wait_journal("refused a message: unknown message")
    finally:
        pad.close()
    (rec,) = recording_dirs(lab)
    assert len(open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab)).bookmarks) == 2
    for path in lab.state_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".age"):  # the spool's plaintext files
            data = path.read_bytes().lower()
            assert b"bookmark" not in data and b"marked" not in data, path.name
    journal = lab.journal().lower()
    assert "bookmark" not in journal and "mark" not in journal.replace("malformed", "")


def test_a_manifest_without_bookmarks_still_opens_and_decrypts_without_chapters(tmp_path, lab):
    key = Ed25519PrivateKey.generate()
    recipient = identity(lab).to_public()
    body = {"recording_id": "ab" * 16, "teacher_id": "t-evans", "device_id": "unit-1",
            "complete": True, "ended_by": "stop", "start": {"monotonic": 1.0, "wall": 2.0},
            "end": {"monotonic": 3.0, "wall": 4.0}, "segments": []}
    old = open_manifest(seal(body, key, str(recipient)), identity(lab))
    assert old.bookmarks == [] and "bookmarks" not in old.body
    write_manifest(tmp_path, recording_id="cd" * 16, teacher_id="t-evans", device_id="unit-1",
                   recipient=str(recipient), start={}, end={}, complete=True, ended_by="stop",
                   device_key=key, bookmarks=[2.5, 0.4])
    new = open_manifest((tmp_path / MANIFEST_FILE).read_bytes(), identity(lab))
    assert new.bookmarks == [0.4, 2.5]


@pytest.mark.parametrize("marks", [[3.0, 1.0], [-1.0], ["1.0"], [True], {"1": 2}])
def test_a_manifest_with_malformed_bookmarks_is_refused(lab, marks):
    key = Ed25519PrivateKey.generate()
    body = {"recording_id": "ab" * 16, "teacher_id": "t-evans", "device_id": "unit-1",
            "complete": True, "ended_by": "stop", "start": {}, "end": {}, "segments": [],
            "bookmarks": marks}
    with pytest.raises(ManifestRejected, match="bookmarks"):
        open_manifest(seal(body, key, str(identity(lab).to_public())), identity(lab))


def test_mark_is_a_message_of_exactly_its_type():
    assert parse_message(b'{"type":"mark"}') == {"type": "mark"}
    with pytest.raises(MalformedMessage):
        parse_message(b'{"type":"mark","seconds":12}')
