"""Gap-free segments, encrypted as they are written (P4, P5), with the real daemon."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from formats.manifest import MANIFEST_FILE, open_manifest
from formats.durable import sha256_file
from hwsim.invariants import check_all, led_intervals
from tests.media import (decode_segments, identity, looks_like_plaintext_media,
                         recording_dirs)


@pytest.fixture
def lab(lab_on_each_encoder):
    """Every test here runs on both encoders (tests/conftest.py)."""
    return lab_on_each_encoder


def _frames(events) -> list[int]:
    return [e["n"] for e in events if e["ev"] == "frame"]


def _wait_sealed(lab, segments: int = 1, timeout: float = 20.0) -> None:
    """Until the recording has sealed `segments` segments: something the fault must not lose."""
    deadline = time.monotonic() + timeout
    while not any(len(list(rec.glob("seg-*.ts.age"))) >= segments
                  for rec in recording_dirs(lab)):
        assert time.monotonic() < deadline, f"no {segments} sealed segment(s) after {timeout} s"
        time.sleep(0.05)


def test_segments_hold_every_frame_once_and_decrypt_with_the_age_cli(unit, lab):
    assert unit.lesson("t-evans", seconds=3.2)["ok"]
    events = lab.timeline()
    produced = _frames(events)
    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    segments = sorted(rec.glob("seg-*.ts.age"))
    assert len(segments) >= 3
    # The standard tool decrypts every segment with the teacher's identity.
    id_file = lab.root / "teacher-identity.txt"
    id_file.write_text(str(ident) + "\n")
    for seg in segments:
        plain = subprocess.run(["age", "-d", "-i", str(id_file), str(seg)], check=True,
                               capture_output=True).stdout
        assert plain[:1] == b"\x47" and len(plain) % 188 == 0
    decoded = decode_segments(rec, ident)
    assert (decoded.video_codec, decoded.audio_codec) == ("h264", "aac")
    assert decoded.counters == list(range(len(produced))) == produced
    assert all(decoded.segments_start_on_keyframe)
    video_s = len(decoded.counters) / 25
    audio_s = decoded.audio_samples / decoded.audio_rate
    assert abs(audio_s - video_s) <= 1 / 25, (audio_s, video_s)
    # The manifest lists each sealed segment with its ciphertext hash, signed by the unit.
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    assert manifest.body["complete"] is True and manifest.body["ended_by"] == "stop pressed"
    assert [(s.file, s.sha256) for s in manifest.segments] == [
        (p.name, sha256_file(p)) for p in segments]
    assert sum(s.duration for s in manifest.segments) == pytest.approx(video_s)
    # Frames were only ever captured while the recording LED was lit.
    (on, off), = led_intervals(events)
    assert all(on < e["t"] < off for e in events if e["ev"] == "frame")
    assert check_all(events) == []


# Four MPEG-TS packets in a row: what a segment written in the clear would start with.
PLAINTEXT_TS = (b"\x47\x40\x00\x10" + b"\xff" * 184) * 4


def test_no_plaintext_media_reaches_the_units_directories_during_or_after_recording(
        lab, monkeypatch):
    """Every place this daemon writes is under `lab.root`: its state (the spool), runtime dir,
    timeline and log by configuration, and here its TMPDIR and working directory too. Those are
    scanned while it records and after; nothing else on the machine is (other tests' files are
    not this recording's)."""
    tmp, cwd = lab.root / "tmp", lab.root / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.chdir(cwd)
    started = time.time()
    found: list[str] = []
    scanned = set()

    def scan() -> None:
        for dirpath, _, files in os.walk(lab.root):
            for name in files:
                path = Path(dirpath, name)
                try:
                    if path.stat().st_mtime < started - 1 or path.is_socket():
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue  # renamed or removed while we looked
                scanned.add(path)
                if why := looks_like_plaintext_media(data):
                    found.append(f"{path}: {why}")

    stop = threading.Event()

    def keep_scanning() -> None:
        while not stop.is_set():
            scan()
            stop.wait(0.05)  # the scan's period: a segment lives for about a second

    canary = tmp / "canary.ts"
    with lab.daemon() as unit:
        scanner = threading.Thread(target=keep_scanning)
        scanner.start()
        try:
            # The scan can fail: a plaintext segment in the daemon's TMPDIR, for a moment.
            canary.write_bytes(PLAINTEXT_TS)
            deadline = time.monotonic() + 10
            while not any(f.startswith(f"{canary}: ") for f in found):
                assert time.monotonic() < deadline, "the scan did not see a plaintext TS file"
                time.sleep(0.02)
            canary.unlink()
            assert unit.lesson("t-evans", seconds=2.5)["ok"]
        finally:
            stop.set()
            scanner.join(timeout=30)
            assert not scanner.is_alive(), "the plaintext scan did not stop"
    scan()
    assert [f for f in found if not f.startswith(f"{canary}: ")] == []
    sealed = [p for p in scanned if p.name.endswith(".ts.age")]
    partial = [p for p in scanned if p.name.endswith(".partial")]
    assert sealed and partial  # the scan did see segments while they were being written


def test_camera_stall_stops_cleanly_with_everything_before_it_sealed(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    unit.control("pin", teacher="t-evans", pin="432187")
    unit.wait_state("recording")
    _wait_sealed(lab)
    unit.control("fault", name="camera_stall", on=True)
    unit.wait_state("idle", timeout=10)
    assert unit.control("status")["fault"] == "capture"
    events = lab.timeline()
    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    decoded = decode_segments(rec, ident)
    assert decoded.counters == _frames(events)  # every frame delivered before the stall is kept
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    assert manifest.body["ended_by"].startswith("fault: capture: camera delivered no frame")
    assert [e["label"] for e in events if e["ev"] == "notice" and e["phase"] == "end"] == [
        "start", "stop"]
    unit.wait_journal("fault: capture: camera delivered no frame")
    assert check_all(events) == []


def test_microphone_failure_stops_cleanly(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    unit.control("pin", teacher="t-evans", pin="432187")
    unit.wait_state("recording")
    _wait_sealed(lab)
    unit.control("fault", name="microphone_error", on=True)
    unit.wait_state("idle", timeout=10)
    (rec,) = recording_dirs(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert "microphone" in manifest.body["ended_by"] and manifest.segments
    assert list(rec.glob(".*.partial")) == []
    assert check_all(lab.timeline()) == []


def test_full_disk_stops_recording_before_a_segment_is_lost(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    unit.control("pin", teacher="t-evans", pin="432187")
    unit.wait_state("recording")
    _wait_sealed(lab)
    unit.control("fault", name="disk_full", on=True)
    unit.wait_state("idle", timeout=10)
    events = lab.timeline()
    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    decoded = decode_segments(rec, ident)
    produced = _frames(events)
    # Recording stopped at a segment boundary: every frame in a sealed segment is there, in
    # order, and the frames not kept are only those after the last seal.
    assert decoded.counters == list(range(len(decoded.counters)))
    assert len(produced) - len(decoded.counters) <= 25
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    assert "MB free" in manifest.body["ended_by"]
    assert len(manifest.segments) == len(list(rec.glob("seg-*.ts.age")))
    assert check_all(events) == []


def test_camera_reading_a_real_video_file_the_usb_webcam_path(lab):
    import av
    from hwsim.capture import background, draw_frame
    video = lab.root / "classroom.mp4"
    ground = background(320, 240)
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=25, width=320, height=240)
        for n in range(30):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(draw_frame(ground, 1000 + n, 25),
                                                             format="yuv420p")))
        out.mux(stream.encode(None))
    lab.settings["sim"]["camera_file"] = str(video)
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=2.0)["ok"]
    (rec,) = recording_dirs(lab)
    decoded = decode_segments(rec, identity(lab))
    assert len(decoded.counters) > 30  # it looped past the end of the file
    assert decoded.counters == [1000 + n % 30 for n in range(len(decoded.counters))]


def test_the_daemon_cannot_dump_core(unit):
    limits = Path(f"/proc/{unit.proc.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert line.split()[4:6] == ["0", "0"]
