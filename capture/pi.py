"""The Raspberry Pi's own capture devices: the camera through picamera2, the microphone through
sounddevice. Imported only by the `pi` hardware factory; neither library is needed elsewhere.
(Not exercised on this PC: picamera2 needs libcamera. The Pi's hardware H.264 encoder comes with
the Pi backend issue; until then frames go through the same PyAV chain as in the simulator.)"""
from __future__ import annotations

import numpy as np

from capture.devices import CaptureError


class PiCamera:
    """The Pi camera module (libcamera) through picamera2, giving BGR frames."""

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
            # libcamera's "RGB888" is B, G, R in memory: the bgr24 the encoder takes.
            cam.configure(cam.create_video_configuration(
                main={"size": self._size, "format": "RGB888"},
                controls={"FrameRate": self._fps}))
            cam.start()
        except Exception as e:
            raise CaptureError(f"camera: {e}") from e

    def read(self, timeout: float) -> np.ndarray:
        try:
            job = self._cam.capture_array("main", wait=False)
            return self._cam.wait(job, timeout=timeout)
        except Exception as e:
            raise CaptureError(f"camera: no frame within {timeout:g} s: {e}") from e

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()


class SoundDeviceMicrophone:
    """A USB or I2S microphone through sounddevice (PortAudio), mono float32."""

    name = "microphone"

    def __init__(self, rate: int = 48000, device: str | None = None):
        self._rate, self._device = rate, device
        self._stream = None

    def open(self) -> None:
        try:
            import sounddevice
            self._stream = sounddevice.InputStream(samplerate=self._rate, channels=1,
                                                   dtype="float32", device=self._device)
            self._stream.start()
        except Exception as e:
            raise CaptureError(f"microphone: {e}") from e

    def read(self, samples: int, timeout: float) -> np.ndarray:
        try:
            data, overflowed = self._stream.read(samples)
        except Exception as e:
            raise CaptureError(f"microphone: {e}") from e
        if overflowed:
            raise CaptureError("microphone: input overflow, samples were lost")
        return data[:, 0]

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
