"""Frames timed by the sensor, through the real daemon on both encoders: a frame the camera
drops is a gap in the video's time and a count in the manifest, never a shift of the frames
after it; the sound runs on through the gap; and the teacher's `decrypt` accepts the recording
with exactly the frames that were taken. Proved from the simulator's timeline (which frames the
camera delivered, which it dropped) and the decrypted bytes."""
from __future__ import annotations

import io
import time

import av
import pyrage
import pytest

from formats.manifest import MANIFEST_FILE, open_manifest
from hwsim.invariants import check_all
from teacher_tools.decrypt import KnownDevices, decrypt_recording
from tests.media import decode_segments, identity, recording_dirs

FPS = 25


@pytest.mark.parametrize("encoder", ["libx264", "picamera2"])
def test_dropped_frames_are_a_gap_in_time_and_a_count_in_the_manifest(lab, tmp_path, encoder):
    lab.settings["sim"] = {"encoder": encoder}
    lab.write_config()
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        _until(lambda: _count(lab, "frame") >= 20)
        unit.control("fault", name="camera_drop", on=True)  # every other frame, for a while
        _until(lambda: _count(lab, "frame_dropped") >= 12)
        unit.control("fault", name="camera_drop", on=False)
        _until(lambda: _count(lab, "frame") >= 70)
        unit.control("press")
        unit.wait_state("idle")
    events = lab.timeline()
    delivered = [e["n"] for e in events if e["ev"] == "frame"]
    dropped = [e["n"] for e in events if e["ev"] == "frame_dropped"]
    assert dropped and set(dropped).isdisjoint(delivered)
    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    decoded = decode_segments(rec, ident)
    assert decoded.counters == delivered  # every frame taken, once, in order
    # Each picture is shown at the time the sensor took it: after a gap, not shifted into it.
    times = _video_times(rec, ident)
    assert [round((t - times[0]) * FPS) for t in times] == delivered
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    segments = manifest.segments
    # Dropped within a segment: counted there; just before one: the gap from the one before.
    between = [round((b.first_pts - a.last_pts) * FPS) - 1 for a, b in zip(segments, segments[1:])]
    assert sum(s.dropped_frames for s in segments) + sum(between) == len(dropped)
    span_s = (delivered[-1] + 1) / FPS
    assert sum(s.duration for s in segments) + sum(between) / FPS == pytest.approx(span_s)
    audio_s = decoded.audio_samples / decoded.audio_rate
    assert abs(audio_s - span_s) <= 1 / FPS  # the sound ran on through the gaps
    lesson = decrypt_recording(rec, ident, tmp_path / "lesson.mp4", KnownDevices(tmp_path / "k"),
                               trust_new_unit=True)
    assert lesson.video_frames == len(delivered)
    assert check_all(events) == []


def _count(lab, event: str) -> int:
    return sum(1 for e in lab.timeline() if e["ev"] == event)


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _video_times(directory, ident) -> list[float]:
    times = []
    for path in sorted(directory.glob("seg-*.ts.age")):
        with av.open(io.BytesIO(pyrage.decrypt(path.read_bytes(), [ident]))) as container:
            times += [float(f.pts * f.time_base) for f in container.decode(video=0)]
    return times


def test_a_manifest_from_before_dropped_frames_were_counted_still_opens():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from formats.manifest import ManifestRejected, seal
    ident = pyrage.x25519.Identity.generate()
    old = {"index": 1, "file": "seg-000001.ts.age", "sha256": "ab" * 32, "duration": 1.0,
           "first_pts": 0.0, "last_pts": 0.96}
    body = {"recording_id": "ab" * 16, "teacher_id": "t-evans", "device_id": "unit-1",
            "complete": True, "ended_by": "stop", "start": {"monotonic": 0.0, "wall": 0.0},
            "end": {"monotonic": 1.0, "wall": 1.0}, "segments": [old]}
    key = Ed25519PrivateKey.generate()
    (segment,) = open_manifest(seal(body, key, str(ident.to_public())), ident).segments
    assert segment.dropped_frames == 0
    for bad in (-1, 1.5, "2"):
        body["segments"] = [{**old, "dropped_frames": bad}]
        with pytest.raises(ManifestRejected, match="segment list is malformed"):
            open_manifest(seal(body, key, str(ident.to_public())), ident)
