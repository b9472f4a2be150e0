"""The Raspberry Pi's own camera through picamera2 (the microphone is in `capture.audio`).
Imported only by the `pi` hardware factory; picamera2 is needed nowhere else.
(Not exercised on this PC: picamera2 needs libcamera. The Pi's hardware H.264 encoder comes with
the Pi backend issue; until then frames go through the same PyAV chain as in the simulator.)

A read honours its timeout: picamera2 is asked to wait only that long for a frame."""
from __future__ import annotations

import concurrent.futures

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
        cam = self._cam
        if cam is None:
            raise CaptureError("camera is not open")
        try:
            # A number waits that long (0 would mean "do not wait" and return a job instead).
            return cam.capture_array("main", wait=max(timeout, 0.001))
        except concurrent.futures.TimeoutError:
            # The request stays queued, and picamera2 would queue stop() behind it for good: the
            # camera could not be closed. Its own way out is to cancel every pending job.
            cam.cancel_all_and_flush()
            raise CaptureError(f"camera: no frame within {timeout:g} s") from None
        except Exception as e:
            raise CaptureError(f"camera: {e}") from e

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()
