"""A camera read through OpenCV: a USB webcam (`/dev/video0`, or its index) or a video file.

    camera = OpenCvCamera("/dev/video0", width=1280, height=720)
    camera.open(); frame = camera.read(timeout=2.0); camera.close()

Frames come out BGR at the configured size (resized if the source differs). A file can `loop`,
which is how the simulator plays a recorded classroom; otherwise its end is a `CaptureError`.
"""
from __future__ import annotations

import cv2
import numpy as np

from capture.devices import CaptureError


class OpenCvCamera:
    """A V4L2 webcam or a video file as a camera."""

    name = "camera"

    def __init__(self, source: str | int, width: int, height: int, loop: bool = False):
        self._source = source
        self._size = (width, height)
        self._loop = loop
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        capture = cv2.VideoCapture(self._source)
        if not capture.isOpened():
            raise CaptureError(f"camera: cannot open {self._source}")
        self._capture = capture

    def read(self, timeout: float) -> np.ndarray:
        if self._capture is None:
            raise CaptureError("camera is not open")
        ok, frame = self._capture.read()
        if not ok and self._loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        if not ok:
            raise CaptureError(f"camera: no frame from {self._source}")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
