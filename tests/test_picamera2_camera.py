"""The Pi camera's path against picamera2's real package (installed from the registry; only what
needs a Pi is stubbed: libcamera and kms). Every call our `PiCamera` makes on `Picamera2` goes to
`create_autospec(Picamera2, instance=True)`, which refuses a method or an argument the installed
picamera2 does not have; its encoder and Output are picamera2's own classes. Recorded H.264
(encoded by PyAV first) goes through picamera2's `Encoder.outputframe` into our Output, as its
V4L2 thread hands it over, and on into sealed segments that decrypt and play with every frame."""
from __future__ import annotations

import inspect
import sys
import threading
import time
from fractions import Fraction
from unittest import mock

import av
import numpy as np
import pyrage
import pytest

from capture.devices import CaptureError
from capture.encoders import VIDEO_TIME_BASE, PacketOutput
from capture.pipeline import CaptureSettings, Recorder
from formats.manifest import SegmentEntry
from hwsim.capture import background, draw_frame
from tests.media import decode_segments

SETTINGS = CaptureSettings(width=320, height=240, fps=25, segment_seconds=1, min_free_mb=1,
                           stall_timeout_s=0.5, seal_timeout_s=5.0)
FRAME_US = 1_000_000 // SETTINGS.fps


@pytest.fixture
def picamera2(monkeypatch):
    """picamera2's real modules, imported over stubs of libcamera and kms (which need a Pi)."""
    monkeypatch.setitem(sys.modules, "libcamera", mock.MagicMock(name="libcamera"))
    monkeypatch.setitem(sys.modules, "kms", mock.MagicMock(name="kms"))
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        monkeypatch.delitem(sys.modules, name)
    import picamera2
    yield picamera2
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        del sys.modules[name]


@pytest.fixture
def camera_of(picamera2, monkeypatch):
    """`camera_of(PiCamera(...))`: the autospec'd `Picamera2` instance it gets when opened."""
    instance = mock.create_autospec(picamera2.Picamera2, instance=True)
    instance.create_video_configuration.side_effect = lambda **kw: {"video": kw}
    monkeypatch.setattr(picamera2, "Picamera2", mock.Mock(return_value=instance))
    return instance


def recorded_h264(frames: int, dropped: set[int]) -> list[tuple[bytes, bool, int]]:
    """What picamera2's H264Encoder hands its outputs for `frames` frames of the simulated
    classroom, the sensor having dropped those in `dropped`: (bytes, keyframe, timestamp in
    microseconds since the first frame). Encoded by PyAV's libx264, one keyframe a second."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = SETTINGS.width, SETTINGS.height, "yuv420p"
    encoder.time_base, encoder.framerate = VIDEO_TIME_BASE, Fraction(SETTINGS.fps)
    encoder.gop_size = SETTINGS.fps
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    encoder.open()
    ground = background(SETTINGS.width, SETTINGS.height)
    out = []
    for n in range(frames):
        if n in dropped:
            continue
        picture = av.VideoFrame.from_ndarray(draw_frame(ground, n, SETTINGS.fps),
                                             format="yuv420p")
        picture.pts, picture.time_base = n * FRAME_US, VIDEO_TIME_BASE
        out.extend((bytes(p), p.is_keyframe, p.pts) for p in encoder.encode(picture))
    out.extend((bytes(p), p.is_keyframe, p.pts) for p in encoder.encode(None))
    return out


class SilentMicrophone:
    name = "microphone"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, samples: int, timeout: float) -> np.ndarray:
        return np.zeros(samples, np.float32)


def test_pi_camera_opens_records_and_closes_with_calls_the_installed_picamera2_has(
        picamera2, camera_of, monkeypatch):
    from capture.pi import PiCamera
    cam = camera_of
    made = []
    real_encoder = picamera2.encoders.H264Encoder

    def h264_encoder(*args, **kwargs):
        made.append((args, kwargs))
        return real_encoder(*args, **kwargs)

    monkeypatch.setattr(picamera2.encoders, "H264Encoder", h264_encoder)
    camera = PiCamera((SETTINGS.width, SETTINGS.height), SETTINGS.fps, close_timeout=1.0)
    camera.open()
    # The main stream is YUV 4:2:0 (no BGR), at the frame rate picamera2 knows a control for.
    (config_call,) = cam.create_video_configuration.call_args_list
    main, controls = config_call.kwargs["main"], config_call.kwargs["controls"]
    assert main == {"size": (SETTINGS.width, SETTINGS.height), "format": "YUV420"}
    picamera2.formats.assert_format_valid(main["format"])
    assert set(controls) <= set(picamera2.controls.Controls._VIRTUAL_FIELDS_MAP_)
    cam.configure.assert_called_once_with({"video": config_call.kwargs})
    cam.start.assert_called_once_with()

    output = PacketOutput()
    camera.start_encoding(output, SETTINGS)
    (start,) = cam.start_encoder.call_args_list
    encoder, to_chain = start.args[:2]
    # picamera2's own H.264 encoder (V4L2: the Pi 4's hardware), a keyframe every second, the
    # SPS/PPS repeated on each (a segment must start on one), writing to a picamera2 Output.
    from picamera2.encoders.h264_encoder import H264Encoder
    assert type(encoder) is H264Encoder
    assert (encoder.iperiod, encoder.repeat, encoder.bitrate) == (
        SETTINGS.fps, True, SETTINGS.video_bitrate_kbps * 1000)
    # On a Pi 5 (no hardware encoder) picamera2's H264Encoder is LibavH264Encoder: it takes
    # the same arguments.
    from picamera2.encoders.libav_h264_encoder import LibavH264Encoder
    (args, kwargs), = made
    inspect.signature(LibavH264Encoder).bind(*args, **kwargs)
    assert isinstance(to_chain, picamera2.outputs.Output)
    assert inspect.signature(type(to_chain).outputframe) == inspect.signature(
        picamera2.outputs.Output.outputframe)
    camera.stop_encoding()
    cam.stop_encoder.assert_called_once_with(encoder)
    camera.close()
    names = [c[0] for c in cam.mock_calls]
    assert names[-3:] == ["cancel_all_and_flush", "stop", "close"]


def test_a_pi_camera_that_will_not_close_is_an_error_within_its_timeout_after_flushing(
        picamera2, camera_of):
    from capture.pi import PiCamera
    wedged = threading.Event()
    camera_of.stop.side_effect = lambda: wedged.wait()  # picamera2's stop behind a dead job
    camera = PiCamera((SETTINGS.width, SETTINGS.height), SETTINGS.fps, close_timeout=0.3)
    camera.open()
    began = time.monotonic()
    try:
        with pytest.raises(CaptureError, match="camera: close did not return within 0.3 s"):
            camera.close()
        assert time.monotonic() - began < 1.5
        names = [c[0] for c in camera_of.mock_calls]
        assert names.index("cancel_all_and_flush") < names.index("stop")
        with pytest.raises(CaptureError):  # still open: refused again, not forgotten
            camera.close()
    finally:
        wedged.set()


def test_recorded_h264_through_picamera2s_encoder_and_our_output_seals_every_frame(
        picamera2, camera_of, tmp_path):
    """As on a Pi 4: picamera2's H264Encoder's V4L2 thread calls `outputframe(bytes, keyframe,
    timestamp)` for each encoded frame; here it is fed recorded H.264 with frames 30 and 31
    dropped by the sensor (a gap in its timestamps)."""
    from capture.pi import PiCamera
    dropped = {30, 31}
    frames = recorded_h264(75, dropped)
    cam = camera_of
    feeding: list[threading.Thread] = []

    def start_encoder(encoder, output, pts=None, quality=None, name=None):
        encoder.output = output  # what picamera2's start_encoder does, through the real setter

        def v4l2_thread() -> None:
            for data, keyframe, timestamp in frames:
                encoder.outputframe(data, keyframe, timestamp)
                time.sleep(0.002)
        feeding.append(threading.Thread(target=v4l2_thread, daemon=True))
        feeding[-1].start()

    cam.start_encoder.side_effect = start_encoder
    cam.stop_encoder.side_effect = lambda encoder=None: feeding[-1].join(5)
    identity = pyrage.x25519.Identity.generate()
    camera = PiCamera((SETTINGS.width, SETTINGS.height), SETTINGS.fps)
    camera.open()
    sealed: list[SegmentEntry] = []
    recorder = Recorder(camera, SilentMicrophone(), tmp_path, str(identity.to_public()),
                        SETTINGS, free_bytes=lambda p: 1 << 40, on_sealed=sealed.append)
    recorder.start()
    deadline = time.monotonic() + 20
    # The parser hands on a frame when the next begins: the last one comes with the stop.
    while recorder.frames < len(frames) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.stop()
    camera.close()
    assert recorder.error is None
    decoded = decode_segments(tmp_path, identity)
    # Every frame the sensor delivered, once, in order; the dropped ones are a gap, not a shift.
    assert decoded.counters == [n for n in range(75) if n not in dropped]
    assert all(decoded.segments_start_on_keyframe) and len(sealed) == 3
    assert [e.dropped_frames for e in sealed] == [0, 2, 0]
    # Keyframes come every 25 frames encoded: after the gap, at frame 52.
    assert [e.first_pts for e in sealed] == [0.0, 1.0, 52 / SETTINGS.fps]
    assert sealed[-1].last_pts == pytest.approx(74 / SETTINGS.fps)
    assert sum(e.duration for e in sealed) == pytest.approx(75 / SETTINGS.fps)
    # The sound runs on through the gap: as long as the video's time, not its frame count.
    audio_s = decoded.audio_samples / decoded.audio_rate
    assert abs(audio_s - 75 / SETTINGS.fps) <= 1 / SETTINGS.fps
    pts = _video_pts(tmp_path, identity)
    assert pts[30] - pts[29] == pytest.approx(3 / SETTINGS.fps)  # frame 29, then frame 32


def _video_pts(directory, identity) -> list[float]:
    import io
    times = []
    for path in sorted(directory.glob("seg-*.ts.age")):
        with av.open(io.BytesIO(pyrage.decrypt(path.read_bytes(), [identity]))) as container:
            times += [float(f.pts * f.time_base) for f in container.decode(video=0)]
    return times


def test_our_output_refuses_what_picamera2s_encoder_could_not_have_meant(picamera2):
    from capture.pi import _to_chain
    output = PacketOutput()
    to_chain = _to_chain(output)
    to_chain.outputframe(b"\x00\x00\x00\x01\x09\xf0", True, None)  # no timestamp
    with pytest.raises(CaptureError, match="without data or a timestamp"):
        output.next(0.1)
