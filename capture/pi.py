"""The Raspberry Pi's own camera through picamera2 (the microphone is in `capture.audio`).
Imported only by the `pi` hardware factory; picamera2 is needed nowhere else.
(picamera2 needs libcamera, so on a PC the tests run picamera2's real package with libcamera
stubbed: tests/test_picamera2_camera.py.)

A read honours its timeout: the camera's frames come through its encoder's output, which the
chain waits on for at most that long (`capture.encoders.PacketOutput`)."""
from __future__ import annotations

from typing import Any


from capture.devices import CaptureError, bounded_close
from capture.encoders import PacketOutput, keyframe_period
from capture.pipeline import CaptureSettings
from capture.zones import ZoneMask, zones_pre_callback


class PiCamera:
    """The Pi camera module (libcamera) through picamera2, encoded by picamera2's own
    `H264Encoder` (the hardware encoder on a Pi 4; libx264 on a Pi 5, which has none) into the
    chain's `PacketOutput`: frames stay YUV 4:2:0 in the camera's buffers, and each packet is
    timed by its request's `SensorTimestamp`. Privacy zones are filled in each request's main
    (YUV420) buffer by picamera2's `pre_callback`, which it runs before any encoder sees the
    request (`capture.zones`).

        camera = PiCamera((1280, 720), fps=25)
        camera.open(); camera.start_encoding(output, settings); ...
        camera.stop_encoding(); camera.close()

    Every close is bounded by `close_timeout`: picamera2's pending jobs are cancelled first
    (`cancel_all_and_flush`, else its stop waits behind them for ever), and a camera that still
    has not closed is a `CaptureError`, so the recording LED stays lit (P2) and the unit is
    restarted by its watchdog."""

    name = "camera"

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: int = 25,
                 close_timeout: float = 2.0):
        self._size = size
        self._fps = fps
        self._close_timeout = close_timeout
        self._cam: Any = None
        self._encoder: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
            cam = Picamera2()
            self._cam = cam  # before configure(): close() closes it if configuring fails
            cam.configure(cam.create_video_configuration(
                main={"size": self._size, "format": "YUV420"},
                controls={"FrameRate": self._fps}))
            cam.start()
        except Exception as e:
            raise CaptureError(f"camera: {e}") from e

    def start_encoding(self, output: PacketOutput, settings: CaptureSettings) -> None:
        cam = self._cam
        if cam is None:
            raise CaptureError("camera is not open")
        try:
            from picamera2.encoders import H264Encoder
            # Set before the encoder starts, so no frame reaches it unfilled.
            cam.pre_callback = (zones_pre_callback(ZoneMask.of(settings.zones, *self._size))
                                if settings.zones else None)
            encoder = H264Encoder(bitrate=settings.video_bitrate_kbps * 1000, repeat=True,
                                  iperiod=keyframe_period(settings), framerate=settings.fps)
            cam.start_encoder(encoder, _to_chain(output), name="main")
            self._encoder = encoder
        except Exception as e:
            raise CaptureError(f"camera encoder: {e}") from e

    def stop_encoding(self) -> None:
        cam, encoder, self._encoder = self._cam, self._encoder, None
        if cam is not None and encoder is not None:
            # Its V4L2 thread gives up on a frame the encoder never returns after 0.4 s; bounded
            # here all the same.
            bounded_close("camera encoder", lambda: cam.stop_encoder(encoder),
                          self._close_timeout)

    def close(self) -> None:
        cam = self._cam
        if cam is None:
            return
        encoder, self._encoder = self._encoder, None

        def close() -> None:
            cam.cancel_all_and_flush()
            if encoder is not None:
                cam.stop_encoder(encoder)
            cam.stop()
            cam.close()

        bounded_close(self.name, close, self._close_timeout)  # raises: still open
        self._cam = None


def _to_chain(output: PacketOutput) -> Any:
    """`output` as a picamera2 `Output`, which is what its encoders write to (they refuse
    anything else)."""
    from picamera2.outputs import Output

    class ToChain(Output):
        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            output.outputframe(frame, keyframe, timestamp, packet, audio)

    return ToChain()
