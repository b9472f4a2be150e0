"""The spool's state machine, driven directly: sealed -> uploading -> confirmed -> purged, and what
`reconcile` and `recover_interrupted` make of every state a crash can leave behind."""
from __future__ import annotations

import hashlib
import json
import os

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.recordings import finish, recover_interrupted
from formats.manifest import MANIFEST_FILE, SegmentEntry, open_manifest, segment_file, sidecar_file
from uploader.spool import FileState, Spool


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool")
    yield s
    s.close()


def seal(recording, index: int, data: bytes) -> str:
    """A sealed segment as the capture chain leaves it: entry first, then the file."""
    digest = hashlib.sha256(data).hexdigest()
    entry = SegmentEntry(index, segment_file(index), digest, 1.0, index - 1.0, index - 0.04)
    (recording.path / sidecar_file(index)).write_text(json.dumps(entry.to_json()))
    (recording.path / segment_file(index)).write_bytes(data)
    return digest


def states(spool) -> dict[str, str]:
    return {f.name: f.state.value for f in spool.files()}


def test_a_file_moves_sealed_uploading_confirmed_purged_and_the_recording_goes_last(
        spool, identity):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    digest = seal(rec, 1, b"one")
    spool.add(rec, segment_file(1), digest)
    file = spool.next_sealed()
    assert (file.name, file.state, file.size) == (segment_file(1), FileState.SEALED, 3)
    spool.mark(file, FileState.UPLOADING)
    assert states(spool) == {segment_file(1): "uploading"}
    # The server answers with another hash: nothing is deleted.
    assert spool.confirm(file, "0" * 64) is False
    assert file.path.exists() and states(spool) == {segment_file(1): "uploading"}
    assert spool.confirm(file, digest) is True
    assert not file.path.exists() and states(spool) == {segment_file(1): "purged"}
    assert spool.backlog().files == 0 and rec.path.exists()  # the manifest has not gone yet
    finish(rec, spool, "unit-1", Ed25519PrivateKey.generate(), "stop pressed")
    manifest = spool.next_sealed()
    assert manifest.name == MANIFEST_FILE
    # Purged segments are still in the manifest: it is made from their entries.
    listed = open_manifest((rec.path / MANIFEST_FILE).read_bytes(), identity).segments
    assert [s.sha256 for s in listed] == [digest]
    spool.confirm(manifest, manifest.sha256)
    assert not rec.path.exists() and spool.files() == [] and spool.recordings() == []


def test_oldest_first_and_held_files_are_skipped(spool, identity):
    a = spool.new_recording("t-evans", str(identity.to_public()))
    b = spool.new_recording("t-jones", str(identity.to_public()))
    for rec, index in ((a, 1), (b, 1), (a, 2)):
        spool.add(rec, segment_file(index), seal(rec, index, f"{rec.recording_id}{index}".encode()))
    order = []
    while (f := spool.next_sealed(frozenset(x.seq for x in order))) is not None:
        order.append(f)
    assert [(f.recording_id, f.name) for f in order] == [
        (a.recording_id, segment_file(1)), (b.recording_id, segment_file(1)),
        (a.recording_id, segment_file(2))]
    assert spool.backlog().files == 3 and spool.used_bytes() == sum(f.size for f in order)


def test_reconcile_brings_the_journal_into_line_with_the_disk_after_a_crash(spool, identity,
                                                                             tmp_path):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    digests = [seal(rec, i, f"segment {i}".encode()) for i in (1, 2, 3, 4)]
    for i in (1, 2, 3):
        spool.add(rec, segment_file(i), digests[i - 1])  # 4: sealed, then the power went
    one, two, three = spool.files()
    spool.mark(one, FileState.UPLOADING)  # cut off mid-send
    spool._set(two, FileState.CONFIRMED)  # confirmed, not yet deleted
    spool.confirm(three, digests[2])      # done
    spool.close()

    after = Spool(tmp_path / "spool")     # the restart, in the daemon's order
    after.recover()
    after.reconcile()
    recover_interrupted(after, "unit-1", Ed25519PrivateKey.generate())
    assert states(after) == {segment_file(1): "sealed", segment_file(2): "purged",
                             segment_file(3): "purged", segment_file(4): "sealed",
                             MANIFEST_FILE: "sealed"}
    assert not (rec.path / segment_file(2)).exists()
    # Oldest first, and a manifest never before a segment it lists.
    assert [f.name for f in after.files() if f.state is FileState.SEALED] == [
        segment_file(1), segment_file(4), MANIFEST_FILE]
    listed = open_manifest((rec.path / MANIFEST_FILE).read_bytes(), identity).segments
    assert [s.sha256 for s in listed] == digests
    after.close()


def test_a_recording_whose_manifest_was_purged_before_the_crash_goes_at_reconcile(spool,
                                                                                    identity):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    spool.add(rec, segment_file(1), seal(rec, 1, b"x"))
    spool.confirm(spool.next_sealed(), hashlib.sha256(b"x").hexdigest())
    finish(rec, spool, "unit-1", Ed25519PrivateKey.generate(), "stop pressed")
    manifest = spool.next_sealed()
    manifest.path.unlink()
    spool._set(manifest, FileState.PURGED)  # the power went before the directory was removed
    spool.reconcile()
    assert spool.recordings() == [] and spool.files() == []


def test_recovery_keeps_uploaded_segments_in_the_manifest_and_drops_an_unsealed_entry(
        spool, identity):
    key = Ed25519PrivateKey.generate()
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    first = seal(rec, 1, b"first")
    spool.add(rec, segment_file(1), first)
    spool.confirm(spool.next_sealed(), first)         # uploaded and purged mid-lesson
    second = seal(rec, 2, b"second")                  # sealed; the journal missed it
    entry = SegmentEntry(3, segment_file(3), "ab" * 32, 1.0, 2.0, 2.96)
    (rec.path / sidecar_file(3)).write_text(json.dumps(entry.to_json()))  # never renamed in
    (rec.path / f".{segment_file(3)}.partial").write_bytes(b"ciphertext")
    assert recover_interrupted(spool, "unit-1", key) == 1
    spool.reconcile()
    manifest = open_manifest((rec.path / MANIFEST_FILE).read_bytes(), identity)
    assert manifest.body["complete"] is False and manifest.body["ended_by"] == "interrupted"
    assert [(s.file, s.sha256) for s in manifest.segments] == [(segment_file(1), first),
                                                               (segment_file(2), second)]
    assert not (rec.path / sidecar_file(3)).exists()
    assert not list(rec.path.glob(".*partial"))
    assert states(spool) == {segment_file(1): "purged", MANIFEST_FILE: "sealed",
                             segment_file(2): "sealed"}


def test_a_recording_that_sealed_nothing_is_forgotten(spool, identity):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    (rec.path / f".{segment_file(1)}.partial").write_bytes(b"ciphertext")
    assert recover_interrupted(spool, "unit-1", Ed25519PrivateKey.generate()) == 0
    assert spool.recordings() == [] and not rec.path.exists()


def test_the_last_recording_is_the_newest_made_even_after_it_left(spool, identity):
    assert spool.newest() == (False, None)
    older = spool.new_recording("t-evans", str(identity.to_public()))
    newer = spool.new_recording("t-evans", str(identity.to_public()))
    assert spool.newest() == (True, newer)
    spool.discard(newer.recording_id)
    assert spool.newest() == (True, None)  # not `older`
    assert [r.recording_id for r in spool.recordings()] == [older.recording_id]
    assert spool.new_recording("t-jones", str(identity.to_public())).sequence == 3


def test_discard_overwrites_and_removes_everything_and_reports_what_was_uploaded(spool,
                                                                                   identity,
                                                                                   tmp_path):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    for i in (1, 2):
        spool.add(rec, segment_file(i), seal(rec, i, bytes([i]) * 1000))
    spool.confirm(spool.next_sealed(), hashlib.sha256(b"\x01" * 1000).hexdigest())
    # A second name for each file still here: after the discard it shows what became of the
    # bytes themselves, not only of the file's name.
    witnesses = {}
    for path in sorted(p for p in rec.path.rglob("*") if p.is_file()):
        witness = tmp_path / f"witness-{len(witnesses)}"
        os.link(path, witness)
        witnesses[path.name] = (witness, path.stat().st_size)
    assert segment_file(2) in witnesses and "recording.json" in witnesses
    assert spool.discard(rec.recording_id) == 1
    assert not rec.path.exists() and spool.files() == []
    assert list(spool.directory.glob(".discard-*")) == []
    # Overwritten in place, every byte, before it was deleted.
    for name, (witness, size) in witnesses.items():
        assert size > 0 and witness.read_bytes() == b"\0" * size, name


def test_a_removal_cut_off_after_its_rename_is_finished_and_nothing_of_it_is_sent(spool, identity,
                                                                                  tmp_path):
    rec = spool.new_recording("t-evans", str(identity.to_public()))
    spool.add(rec, segment_file(1), seal(rec, 1, b"never to be sent"))
    # The power goes just after a discard's rename, before the journal forgot the recording.
    rec.path.rename(spool.directory / f".discard-{rec.recording_id}")
    spool.close()
    after = Spool(tmp_path / "spool")
    after.recover()
    after.reconcile()
    assert after.next_sealed() is None and after.files() == [] and after.recordings() == []
    assert [p.name for p in after.directory.iterdir() if not p.name.startswith("journal")] == []
    after.close()
