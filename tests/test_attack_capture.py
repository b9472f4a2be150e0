"""Faults inside the capture chain: a short write to the encryptor, a muxer that fails to close, a
device read that never returns, and a quota stop. None may leave a gap that is sealed, leak a
thread, a descriptor or a partial file, wedge a stop, or keep a recording's encoders alive."""
from __future__ import annotations

import dataclasses
import errno
import fractions
import gc
import os
import threading
import time
import weakref
from pathlib import Path

import av
import numpy as np
import pyrage
import pytest
from gpiozero.pins.mock import MockFactory

from capture import pipeline
from capture.devices import CaptureError
from capture.pipeline import CameraFrame, CaptureSettings, DiskFull, Recorder
from capture.v4l2 import V4l2Camera
from capture.sealing import SealingSink
from hwsim.capture import background, draw_frame
from led_indicator.guard import CaptureGuard, StillOpen
from led_indicator.lights import RecordingLed
from tests.media import decode_segments

# Small frames, ten a second, a segment a second: a few segments take a fraction of a second.
SETTINGS = CaptureSettings(width=320, height=240, fps=10, segment_seconds=1, min_free_mb=1,
                           stall_timeout_s=0.2, seal_timeout_s=5.0)
MB = 1024 * 1024


@pytest.fixture
def identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def recipient(identity) -> str:
    return str(identity.to_public())


class FakeCamera:
    """Numbered frames as fast as they are taken; after `hang_after` frames a read blocks until
    `release` is set, ignoring its timeout (a driver that wedges)."""

    name = "camera"

    def __init__(self, hang_after: int | None = None):
        self.hang_after = hang_after
        self.frames = 0
        self.hanging = threading.Event()
        self.release = threading.Event()
        self._background = background(SETTINGS.width, SETTINGS.height)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, timeout: float) -> CameraFrame:
        if self.hang_after is not None and self.frames >= self.hang_after:
            self.hanging.set()
            self.release.wait()
            raise CaptureError("camera: released")
        image = draw_frame(self._background, self.frames, SETTINGS.fps)
        self.frames += 1
        return CameraFrame(av.VideoFrame.from_ndarray(image, format="yuv420p"),
                           self.frames * 1_000_000_000 // SETTINGS.fps)


class FakeMicrophone:
    name = "microphone"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, samples: int, timeout: float) -> np.ndarray:
        return np.zeros(samples, np.float32)


def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stop_within(recorder: Recorder, seconds: float) -> float:
    """Stop `recorder` on a helper thread; fail (rather than hang) if it takes over `seconds`."""
    started = time.monotonic()
    stopper = threading.Thread(target=recorder.stop, daemon=True)
    stopper.start()
    stopper.join(seconds)
    assert not stopper.is_alive(), f"Recorder.stop() did not return within {seconds} s"
    return time.monotonic() - started


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    """Every thread of this process, the encoders' own (x264's) included."""
    return len(os.listdir("/proc/self/task"))


def seal_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("seal-")]


# -- item 12: the pipe to the encryptor -------------------------------------------------------


class _Stingy:
    """The sink's pipe end, taking at most `most` bytes a write, and none once `budget` bytes
    have gone (a pipe that takes nothing more)."""

    def __init__(self, raw, most: int, budget: int | None = None):
        self._raw, self._most, self._budget = raw, most, budget

    def write(self, data) -> int:
        most = self._most if self._budget is None else min(self._most, self._budget)
        if most <= 0:
            return 0
        taken = self._raw.write(bytes(memoryview(data)[:most]))
        if self._budget is not None:
            self._budget -= taken
        return taken

    def __getattr__(self, name):
        return getattr(self._raw, name)


def test_a_short_write_to_the_encryptor_is_finished_not_sealed_as_a_gap(tmp_path, identity,
                                                                        recipient):
    sink = SealingSink(tmp_path, 1, recipient)
    sink._writer = _Stingy(sink._writer, most=4096)  # the fd write: short counts only
    plaintext = os.urandom(200_000)
    assert sink.write(plaintext[:150_000]) == 150_000
    assert sink.write(plaintext[150_000:]) == 50_000
    sealed = sink.finish()
    sink.commit()
    ciphertext = sealed.path.read_bytes()
    assert pyrage.decrypt(ciphertext, [identity]) == plaintext
    assert sealed.size == len(ciphertext)


def test_a_pipe_that_takes_nothing_stops_the_recording_and_that_segment_is_not_sealed(
        tmp_path, identity, recipient, monkeypatch):
    class SecondSinkStalls(SealingSink):
        made = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            SecondSinkStalls.made += 1
            if SecondSinkStalls.made == 2:  # segment 2 takes 3000 bytes, a short write, then none
                self._writer = _Stingy(self._writer, most=1000, budget=3000)

    monkeypatch.setattr(pipeline, "SealingSink", SecondSinkStalls)
    entries = []
    recorder = Recorder(FakeCamera(), FakeMicrophone(), tmp_path, recipient, SETTINGS,
                        free_bytes=lambda p: 1 << 40, on_sealed=entries.append)
    recorder.start()
    wait_for(lambda: recorder.failed, what="the recorder to fail")
    sealed = recorder.stop()
    assert "took none" in str(recorder.error)
    # Segment 1 is whole; segment 2, which has a gap, was neither sealed, listed nor reported.
    assert [e.file for e in sealed] == [e.file for e in entries] == ["seg-000001.ts.age"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg-000001.json", "seg-000001.ts.age"]
    assert decode_segments(tmp_path, identity).counters == list(range(SETTINGS.fps))


def test_a_muxer_that_fails_to_close_leaks_no_descriptor_thread_or_partial_file(
        tmp_path, recipient, monkeypatch):
    (tmp_path / "warm").mkdir()
    warm = Recorder(FakeCamera(), FakeMicrophone(), tmp_path / "warm", recipient, SETTINGS,
                    free_bytes=lambda p: 1 << 40)
    warm.start()
    wait_for(lambda: warm.frames > 5)
    warm.stop()
    assert warm.error is None
    fds = open_fds()

    real_open = av.open
    closes = []

    class TrailerFails:
        """A muxer whose second segment's trailer cannot be written."""

        def __init__(self, container):
            self._container = container

        def close(self):
            self._container.close()
            closes.append(1)
            if len(closes) == 2:
                raise OSError(errno.EIO, "trailer write failed")

        def __getattr__(self, name):
            return getattr(self._container, name)

    monkeypatch.setattr(av, "open", lambda *a, **k: TrailerFails(real_open(*a, **k)))
    directory = tmp_path / "rec"
    directory.mkdir()
    recorder = Recorder(FakeCamera(), FakeMicrophone(), directory, recipient, SETTINGS,
                        free_bytes=lambda p: 1 << 40)
    recorder.start()
    wait_for(lambda: recorder.failed, what="the recorder to fail")
    sealed = recorder.stop()
    assert "trailer write failed" in str(recorder.error)
    assert [e.file for e in sealed] == ["seg-000001.ts.age"]
    assert sorted(p.name for p in directory.iterdir()) == ["seg-000001.json", "seg-000001.ts.age"]
    assert seal_threads() == []
    assert open_fds() == fds


# -- item 14: device reads that never return --------------------------------------------------


def test_stop_returns_when_a_camera_read_never_returns_and_keeps_what_was_captured(
        tmp_path, identity, recipient):
    camera = FakeCamera(hang_after=25)
    recorder = Recorder(camera, FakeMicrophone(), tmp_path, recipient, SETTINGS,
                        free_bytes=lambda p: 1 << 40)
    try:
        recorder.start()
        assert camera.hanging.wait(10)
        took = stop_within(recorder, 10)
        assert took < 2 * SETTINGS.stall_timeout_s + pipeline.READ_GRACE_S + 2
        assert str(recorder.error) == ("camera: a read did not return within 1.4 s; "
                                       "capture did not stop")
        # Every frame read before the camera hung is sealed, the last segment included.
        assert decode_segments(tmp_path, identity).counters == list(range(25))
        assert not list(tmp_path.glob(".*.partial"))
    finally:
        camera.release.set()


def test_stop_returns_when_the_disk_wedges_and_the_late_segment_is_never_sealed(
        tmp_path, recipient, monkeypatch):
    wedged, unwedge = threading.Event(), threading.Event()

    class WedgingSink(SealingSink):
        def finish(self):
            if self.final.name == "seg-000002.ts.age":  # the disk stops answering here
                wedged.set()
                unwedge.wait()
            return super().finish()

    monkeypatch.setattr(pipeline, "SealingSink", WedgingSink)
    settings = dataclasses.replace(SETTINGS, seal_timeout_s=1.0)
    reported = []
    recorder = Recorder(FakeCamera(), FakeMicrophone(), tmp_path, recipient, settings,
                        free_bytes=lambda p: 1 << 40, on_sealed=reported.append)
    try:
        recorder.start()
        assert wedged.wait(10)
        took = stop_within(recorder, 10)
        assert took < 2 * settings.stall_timeout_s + pipeline.READ_GRACE_S + 1.0 + 0.5
        assert str(recorder.error) == ("encoder: the last segment was not sealed within 1 s; "
                                       "capture did not stop")
    finally:
        unwedge.set()
    # The stop has returned (and the manifest would be written): what comes after is not sealed.
    wait_for(lambda: not seal_threads() and not list(tmp_path.glob(".*.partial")),
             what="the late segment to be given up")
    assert [e.file for e in reported] == ["seg-000001.ts.age"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg-000001.json", "seg-000001.ts.age"]


class HangingInput:
    """Stands in for the container `av.open` gives for a webcam: pictures until `hang` is set,
    then a decode that blocks until `unblock` is set (a webcam unplugged mid-frame)."""

    hang = threading.Event()
    unblock = threading.Event()
    closed: list[str] = []

    def __init__(self, source):
        self._source = source

    def decode(self, video=0):
        n = 0
        while True:
            if self.hang.is_set():
                self.unblock.wait()
            picture = av.VideoFrame.from_ndarray(
                draw_frame(background(SETTINGS.width, SETTINGS.height), n, SETTINGS.fps),
                format="yuv420p")
            picture.pts, picture.time_base = n * 100_000, fractions.Fraction(1, 1_000_000)
            n += 1
            yield picture

    def close(self) -> None:
        HangingInput.closed.append(self._source)


@pytest.fixture
def hanging_webcam(monkeypatch):
    HangingInput.hang = threading.Event()
    HangingInput.unblock = threading.Event()
    HangingInput.closed = []
    real_open = av.open

    def open_webcam(source, *args, **kwargs):
        if isinstance(source, str) and source.startswith("/dev/video"):
            return HangingInput(source)
        return real_open(source, *args, **kwargs)  # the segments' muxers

    monkeypatch.setattr(av, "open", open_webcam)
    yield HangingInput
    HangingInput.unblock.set()


def test_a_webcam_read_that_hangs_gives_up_at_its_timeout_and_the_camera_refuses_to_close(
        hanging_webcam):
    camera = V4l2Camera("/dev/video9", SETTINGS.width, SETTINGS.height, SETTINGS.fps)
    camera.open()
    frame = camera.read(timeout=1.0)
    assert (frame.picture.width, frame.picture.height) == (SETTINGS.width, SETTINGS.height)
    assert frame.picture.format.name == "yuv420p"
    hanging_webcam.hang.set()
    started = time.monotonic()
    with pytest.raises(CaptureError, match=r"no frame within 0.2 s"):
        camera.read(timeout=0.2)
    with pytest.raises(CaptureError, match="an earlier read has still not returned"):
        camera.read(timeout=0.2)
    assert time.monotonic() - started < 1.0
    with pytest.raises(CaptureError, match="may still be capturing"):
        camera.close()
    with pytest.raises(CaptureError, match="may still be capturing"):
        camera.open()  # the next recording: not while the last one's read is stuck
    assert hanging_webcam.closed == []  # not closed under a read in progress
    hanging_webcam.hang.clear()
    hanging_webcam.unblock.set()
    wait_for(lambda: not _read_in_progress(camera), what="the stuck read to return")
    camera.close()
    assert hanging_webcam.closed == ["/dev/video9"]


def _read_in_progress(camera: V4l2Camera) -> bool:
    try:
        camera.read(timeout=1.0)
        return False
    except CaptureError:
        return True


def test_a_webcam_that_hangs_mid_recording_is_stopped_and_the_led_stays_lit(
        tmp_path, identity, recipient, hanging_webcam):
    led = RecordingLed("GPIO17", pin_factory=MockFactory())
    guard = CaptureGuard(led)
    camera = V4l2Camera("/dev/video9", SETTINGS.width, SETTINGS.height, SETTINGS.fps)
    guard.light()
    microphone = FakeMicrophone()
    guard.open(camera)
    guard.open(microphone)
    recorder = Recorder(camera, microphone, tmp_path, recipient, SETTINGS,
                        free_bytes=lambda p: 1 << 40)
    recorder.start()
    wait_for(lambda: recorder.frames >= 15, what="frames")
    hanging_webcam.hang.set()
    wait_for(lambda: recorder.failed, what="the camera's read to time out")
    stop_within(recorder, 10)
    assert str(recorder.error) == "camera /dev/video9: no frame within 0.2 s"
    assert decode_segments(tmp_path, identity).counters == list(range(recorder.frames))
    # The camera may still be capturing: the guard keeps it open, and the LED lit (P2).
    with pytest.raises(StillOpen, match="camera"):
        guard.close_all()
    with pytest.raises(StillOpen):
        guard.darken()
    assert led.is_lit
    hanging_webcam.hang.clear()
    hanging_webcam.unblock.set()
    wait_for(lambda: _closes(guard), what="the camera to close once its read returned")
    guard.darken()
    assert not led.is_lit


def _closes(guard: CaptureGuard) -> bool:
    try:
        guard.close_all()
        return True
    except StillOpen:
        return False



    def start(self) -> None:
        pass


    def close(self) -> None:
        pass




# -- item 16: a quota stop lets go of the recording ---------------------------------------------


def test_quota_stops_free_the_recorder_its_encoders_and_their_threads_without_the_collector(
        tmp_path, recipient, monkeypatch):
    made: list[weakref.ref] = []

    class TrackedEncoders(pipeline.Encoders):
        def __init__(self, settings, **kwargs):
            super().__init__(settings, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(pipeline, "Encoders", TrackedEncoders)
    gc.collect()
    threads_before, python_threads_before = os_threads(), threading.active_count()
    gc.disable()
    try:
        for n in range(4):
            directory = tmp_path / f"rec{n}"
            directory.mkdir()
            quota = iter([1 << 40])  # room for the first segment, then the quota is spent
            recorder = Recorder(FakeCamera(), FakeMicrophone(), directory, recipient, SETTINGS,
                                free_bytes=lambda p, q=quota: next(q, 0))
            recorder.start()
            wait_for(lambda r=recorder: r.failed, what="the quota stop")
            assert [e.index for e in recorder.stop()] == [1]
            assert isinstance(recorder.error, DiskFull)
            assert recorder.error.__traceback__ is None
            gone = weakref.ref(recorder)
            del recorder
            assert gone() is None, "the stopped recorder is still referenced"
            assert [ref() for ref in made] == [None] * (n + 1), "encoders still alive"
        wait_for(lambda: os_threads() <= threads_before, timeout=5,
                 what=f"threads back to {threads_before} (now {os_threads()})")
        assert threading.active_count() <= python_threads_before
    finally:
        gc.enable()


def test_a_recording_stopped_for_lack_of_room_lets_go_of_its_recorder_in_the_unit(
        lab_template, monkeypatch):
    import asyncio
    import tempfile

    from appliance import unit as unit_module
    from teacher_tools.keys import load_signing_key
    from appliance.roster import TeacherCard
    from appliance.token import mint
    from appliance.unit import State
    from hwsim.lab import DEVICE_ID, PASSPHRASE
    from tests.inprocess import sim_unit

    recorders: list[weakref.ref] = []

    class TrackedRecorder(Recorder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            recorders.append(weakref.ref(self))

    monkeypatch.setattr(unit_module, "Recorder", TrackedRecorder)
    files = lab_template.key_files("t-evans")
    key = load_signing_key(files.signing_key, PASSPHRASE)
    card = TeacherCard.parse(files.card.read_bytes())

    async def until(condition) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def quota_stop(root: Path) -> str | None:
        unit, hw, spool = sim_unit(lab_template, root)
        try:
            await unit.press()
            token = mint(key, "t-evans", DEVICE_ID, unit.challenge, card.recipient)
            assert (await unit.present(token)).ok
            await until(lambda: unit.state is State.RECORDING)
            hw.parts.faults.set("disk_full")
            await until(lambda: unit.state is State.IDLE)
            return unit.fault
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()

    gc.collect()
    gc.disable()
    try:
        with tempfile.TemporaryDirectory(prefix="cc-") as root:
            assert asyncio.run(quota_stop(Path(root))) == "capture"
        assert len(recorders) == 1
        assert recorders[0]() is None, "the unit's stopped recorder is still referenced"
    finally:
        gc.enable()
