"""Privacy zones on the Pi camera's path, against picamera2's real package (libcamera stubbed, as
in tests/test_picamera2_camera.py): `PiCamera` sets picamera2's `pre_callback` before it starts
the hardware encoder, and that callback, through picamera2's own `MappedArray` on a YUV420
buffer laid out as picamera2 maps it (rows padded to the stride), fills each zone and nothing
else. picamera2 runs `pre_callback` on each request before its encoders see it."""
from __future__ import annotations

import inspect
import types

import numpy as np

from capture.encoders import PacketOutput
from capture.pipeline import CaptureSettings
from capture.zones import FILL_C, FILL_Y, Zone, ZoneMask
from tests.test_picamera2_camera import camera_of, picamera2  # noqa: F401  (fixtures)

WIDTH, HEIGHT, STRIDE = 480, 272, 512
ZONES = (Zone(rect=(0.05, 0.55, 0.33, 0.95)),
         Zone(polygon=((0.6, 0.2), (0.95, 0.3), (0.7, 0.8))))


def test_the_installed_picamera2_runs_pre_callback_on_each_request_before_its_encoders(
        picamera2):  # noqa: F811
    class Unopened(picamera2.Picamera2):
        def __del__(self):  # nothing was opened to close
            pass

    camera = Unopened.__new__(Unopened)
    picamera2.Picamera2._reset_flags(camera)  # what its __init__ sets, without a camera
    assert camera.pre_callback is None  # the attribute PiCamera sets exists in this version
    source = inspect.getsource(picamera2.Picamera2)
    assert 0 < source.index("self.pre_callback(req)") < source.index("encoder.encode(")


def test_pi_camera_sets_the_zones_pre_callback_before_the_encoder_starts(
        picamera2, camera_of):  # noqa: F811
    from capture.pi import PiCamera
    cam = camera_of
    set_when_encoding_started = []
    cam.start_encoder.side_effect = (
        lambda *args, **kwargs: set_when_encoding_started.append(cam.pre_callback))
    camera = PiCamera((WIDTH, HEIGHT), 25, close_timeout=1.0)
    camera.open()
    settings = CaptureSettings(width=WIDTH, height=HEIGHT, zones=ZONES)
    camera.start_encoding(PacketOutput(), settings)
    (callback,) = set_when_encoding_started
    assert callable(callback)

    # Run it as picamera2 does, on a request whose main stream is a padded YUV420 buffer,
    # mapped by picamera2's own MappedArray.
    rng = np.random.default_rng(3)
    memory = rng.integers(60, 200, HEIGHT * 3 // 2 * STRIDE, dtype=np.uint8)
    before = memory.copy()
    callback(_request(picamera2, memory))
    mask = ZoneMask.of(ZONES, WIDTH, HEIGHT)
    buffer, original = memory.reshape(-1, STRIDE), before.reshape(-1, STRIDE)
    y = buffer[:HEIGHT, :WIDTH]
    assert (y[mask.luma] == FILL_Y).all()
    assert (y[~mask.luma] == original[:HEIGHT, :WIDTH][~mask.luma]).all()
    chroma = memory[HEIGHT * STRIDE:].reshape(2, HEIGHT // 2, STRIDE // 2)[:, :, :WIDTH // 2]
    chroma_before = before[HEIGHT * STRIDE:].reshape(2, HEIGHT // 2, STRIDE // 2)[:, :, :WIDTH // 2]
    for plane, was in zip(chroma, chroma_before, strict=True):
        assert (plane[mask.chroma] == FILL_C).all()
        assert (plane[~mask.chroma] == was[~mask.chroma]).all()
    assert (buffer[:HEIGHT, WIDTH:] == original[:HEIGHT, WIDTH:]).all()  # the row padding
    camera.stop_encoding()
    camera.close()


def test_pi_camera_without_zones_sets_no_pre_callback(picamera2, camera_of):  # noqa: F811
    from capture.pi import PiCamera
    camera = PiCamera((WIDTH, HEIGHT), 25, close_timeout=1.0)
    camera.open()
    camera.start_encoding(PacketOutput(), CaptureSettings(width=WIDTH, height=HEIGHT))
    assert camera_of.pre_callback is None
    camera.stop_encoding()
    camera.close()


def _request(picamera2, memory: np.ndarray):  # noqa: F811
    """A completed request as picamera2's MappedArray reads it: its main stream's dmabuf mapped
    by the allocator, and the stream's configuration."""
    stream, framebuffer = object(), object()

    class Mapped:  # the allocator's sync(): the mapped memory while entered
        def __init__(self, allocator, fb, write):
            assert fb is framebuffer and write

        def __enter__(self):
            return memory

        def __exit__(self, *exc):
            return None

    picam2 = types.SimpleNamespace(allocator=types.SimpleNamespace(sync=Mapped))
    picam2.helpers = picamera2.request.Helpers(picam2)
    return types.SimpleNamespace(
        stream_map={"main": stream}, request=types.SimpleNamespace(buffers={stream: framebuffer}),
        picam2=picam2,
        config={"main": {"format": "YUV420", "size": (WIDTH, HEIGHT), "stride": STRIDE}})
