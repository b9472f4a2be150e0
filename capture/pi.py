"""The Raspberry Pi's own capture devices: the camera through picamera2, the microphone through
sounddevice. Imported only by the `pi` hardware factory; neither library is needed elsewhere."""
from __future__ import annotations

from capture.devices import CaptureError


class PiCamera:
    """The Pi camera module (libcamera) through picamera2."""

    name = "camera"

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: int = 25):
        self._size = size
        self._fps = fps
        self._cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
            cam = Picamera2()
            self._cam = cam
            cam.configure(cam.create_video_configuration(
                main={"size": self._size}, controls={"FrameRate": self._fps}))
            cam.start()
        except Exception as e:
            raise CaptureError(f"camera: {e}") from e

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()


class SoundDeviceMicrophone:
    """A USB or I2S microphone through sounddevice (PortAudio)."""

    name = "microphone"

    def __init__(self, rate: int = 48000, channels: int = 1, device: str | None = None):
        self._rate, self._channels, self._device = rate, channels, device
        self._stream = None

    def open(self) -> None:
        try:
            import sounddevice
            self._stream = sounddevice.RawInputStream(
                samplerate=self._rate, channels=self._channels, dtype="int16",
                device=self._device)
            self._stream.start()
        except Exception as e:
            raise CaptureError(f"microphone: {e}") from e

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
