"""The teacher's side: `classcam decrypt` joins a whole recording into one playable MP4, and
refuses, with the reason, a recording that is not exactly what the unit's manifest lists."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teacher_tools.decrypt import KnownDevices, RecordingRefused, decrypt_recording
from formats.keytext import b64, raw_public
from formats.manifest import DOMAIN, MANIFEST_FILE
from hwsim.capture import read_counter
from hwsim.lab import PASSPHRASE
from tests.media import identity, recording_dirs


@pytest.fixture(scope="module", params=["libx264", "picamera2"])
def recorded(lab_template, request):
    """Two recordings by t-evans (the second to borrow a segment from), made once for each
    encoder: the chain's libx264, and the camera's own through the chain's Output."""
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root, sim={"encoder": request.param})
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=3.2)["ok"]
        frames = [e["n"] for e in lab.timeline() if e["ev"] == "frame"]
        assert unit.lesson("t-evans", seconds=2.2)["ok"]
    first, second = recording_dirs(lab)
    yield lab, first, second, len(frames)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def copy(recorded, tmp_path):
    """A fresh copy of the first recording, as the teacher downloaded it (ciphertext only)."""
    lab, first, _, _ = recorded
    target = tmp_path / "download"
    target.mkdir()
    for path in first.glob("*.age"):
        shutil.copy(path, target / path.name)
    return target


def _decrypt(lab, directory: Path, output: Path, known: Path, **kw):
    # As a teacher who accepts the unit's key on first sight (tests/test_attack_trust.py shows
    # decrypt refusing an unknown unit otherwise).
    return decrypt_recording(directory, identity(lab), output, KnownDevices(known),
                             **{"trust_new_unit": True, **kw})


def test_joined_lesson_has_every_frame_once_and_audio_the_length_of_video(recorded, copy,
                                                                          tmp_path):
    lab, _, _, produced = recorded
    out = tmp_path / "lesson.mp4"
    lesson = _decrypt(lab, copy, out, tmp_path / "known.json")
    assert lesson.video_frames == produced and lesson.complete and lesson.device_first_seen
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames,duration", "-of", "json", str(out)],
        check=True, capture_output=True).stdout)["streams"]
    assert [(s["codec_type"], s["codec_name"]) for s in probe] == [("video", "h264"),
                                                                  ("audio", "aac")]
    assert int(probe[0]["nb_read_frames"]) == produced
    # The counters drawn by the simulated camera, read back from the decoded pixels.
    with av.open(str(out)) as container:
        counters = [read_counter(f.to_ndarray(format="bgr24"))
                    for f in container.decode(video=0)]
    assert counters == list(range(produced))
    with av.open(str(out)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples / 48000 - produced / 25) <= 1 / 25
    # The player's clock starts at zero (no second of nothing before the first frame).
    assert float(probe[0]["duration"]) == pytest.approx(produced / 25, abs=0.001)
    # The unit is now known by its key.
    assert KnownDevices(tmp_path / "known.json").fingerprint("sim-unit-1") == lesson.device_fingerprint


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.ts.age"))


def flip_a_byte(d: Path, other: Path) -> None:
    seg = _segments(d)[1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))


def drop_a_segment(d: Path, other: Path) -> None:
    _segments(d)[1].unlink()


def swap_two(d: Path, other: Path) -> None:
    a, b = _segments(d)[1:3]
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def from_another_recording(d: Path, other: Path) -> None:
    shutil.copy(_segments(other)[1], _segments(d)[1])


def duplicated(d: Path, other: Path) -> None:
    shutil.copy(_segments(d)[0], _segments(d)[1])


def unlisted_extra(d: Path, other: Path) -> None:
    shutil.copy(_segments(other)[-1], d / "seg-000099.ts.age")


def manifest_missing(d: Path, other: Path) -> None:
    (d / MANIFEST_FILE).unlink()


def manifest_from_another_recording(d: Path, other: Path) -> None:
    shutil.copy(other / MANIFEST_FILE, d / MANIFEST_FILE)


TAMPERING = {
    "a flipped byte": (flip_a_byte, "seg-000002.ts.age does not match the manifest"),
    "a dropped segment": (drop_a_segment, "segment 2 (seg-000002.ts.age) is missing"),
    "two segments swapped": (swap_two, "seg-000002.ts.age holds segment 3, not segment 2: "
                                       "segments are reordered"),
    "a segment from another recording": (from_another_recording,
                                         "seg-000002.ts.age does not match the manifest: "
                                         "altered, or from another recording"),
    "a duplicated segment": (duplicated, "seg-000001.ts.age is duplicated"),
    "a segment not in the manifest": (unlisted_extra,
                                      "seg-000099.ts.age is not listed in the manifest"),
    "no manifest": (manifest_missing, "manifest.age is missing"),
    "the other recording's manifest": (manifest_from_another_recording,
                                       "does not match the manifest"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_recording_is_refused_with_its_reason(recorded, copy, tmp_path, case):
    lab, _, second, _ = recorded
    tamper, reason = TAMPERING[case]
    tamper(copy, second)
    out = tmp_path / "lesson.mp4"
    with pytest.raises(RecordingRefused) as refused:
        _decrypt(lab, copy, out, tmp_path / "known.json")
    assert any(reason in r for r in refused.value.reasons), refused.value.reasons
    assert not out.exists() and list(tmp_path.glob(".*partial")) == []


def _resign(directory: Path, ident, key: Ed25519PrivateKey, recipient: str) -> None:
    envelope = json.loads(pyrage.decrypt((directory / MANIFEST_FILE).read_bytes(), [ident]))
    body = json.loads(envelope["body"])
    body["ended_by"] = "stop pressed"  # what a forger might want to change
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    envelope.update(body=text, device_key=b64(raw_public(key.public_key())),
                    signature=b64(key.sign(DOMAIN + text.encode())))
    (directory / MANIFEST_FILE).write_bytes(pyrage.encrypt(
        json.dumps(envelope).encode(), [pyrage.x25519.Recipient.from_str(recipient)]))


def test_a_manifest_re_signed_by_another_key_is_refused(recorded, copy, tmp_path):
    lab, _, _, _ = recorded
    ident = identity(lab)
    known = tmp_path / "known.json"
    genuine = _decrypt(lab, copy, tmp_path / "first.mp4", known)  # the unit becomes known
    _resign(copy, ident, Ed25519PrivateKey.generate(), str(ident.to_public()))
    with pytest.raises(RecordingRefused) as refused:
        _decrypt(lab, copy, tmp_path / "lesson.mp4", known)
    assert "is known by key " + genuine.device_fingerprint in str(refused.value)
    # Pinned by fingerprint (a teacher who read it off the unit) it is refused as well.
    with pytest.raises(RecordingRefused, match="not the key"):
        _decrypt(lab, copy, tmp_path / "lesson.mp4", tmp_path / "new.json",
                 device_fingerprint=genuine.device_fingerprint)


def test_a_manifest_whose_signature_does_not_verify_is_refused(recorded, copy, tmp_path):
    lab, _, _, _ = recorded
    ident = identity(lab)
    envelope = json.loads(pyrage.decrypt((copy / MANIFEST_FILE).read_bytes(), [ident]))
    envelope["body"] = envelope["body"].replace('"complete":true', '"complete":false')
    (copy / MANIFEST_FILE).write_bytes(pyrage.encrypt(json.dumps(envelope).encode(),
                                                      [ident.to_public()]))
    with pytest.raises(RecordingRefused, match="manifest signature does not verify"):
        _decrypt(lab, copy, tmp_path / "lesson.mp4", tmp_path / "known.json")


def test_cli_refuses_with_one_line_per_reason_and_exit_status_1(recorded, copy, tmp_path):
    lab, _, second, _ = recorded
    swap_two(copy, second)
    out = tmp_path / "lesson.mp4"
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "decrypt", "--identity",
         str(lab.key_files("t-evans").identity), "--known-devices", str(tmp_path / "k.json"),
         "--trust-new-unit", str(copy), "-o", str(out)],
        env=dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE), capture_output=True, text=True,
        timeout=60)
    assert run.returncode == 1 and not out.exists()
    lines = run.stderr.strip().splitlines()
    assert lines == [
        f"classcam: {copy}: refused: seg-000002.ts.age holds segment 3, not segment 2: "
        "segments are reordered",
        f"classcam: {copy}: refused: seg-000003.ts.age holds segment 2, not segment 3: "
        "segments are reordered"]


def test_another_teachers_identity_cannot_open_the_recording(recorded, copy, tmp_path):
    lab, _, _, _ = recorded
    with pytest.raises(RecordingRefused, match="cannot be decrypted with this identity"):
        decrypt_recording(copy, identity(lab, "t-jones"), tmp_path / "x.mp4",
                          KnownDevices(tmp_path / "k.json"))
