"""The camera the capture benchmarks give the real `Recorder`: pre-rendered yuv420p frames,
looped, handed over as fast as they are taken, each wrapped without a copy (as picamera2 wraps
a request's buffer), timed on the frame clock."""
from __future__ import annotations

import threading

import numpy as np

from capture.devices import CaptureError
from capture.pipeline import CameraFrame


class SourceEnded(CaptureError):
    """The benchmark's camera has given every frame it was asked for."""


class LoopCamera:
    """`frames`, looped, as fast as they are taken; `SourceEnded` after `total` (and `ended`
    set, for the benchmark waiting on it)."""

    name = "camera"

    def __init__(self, frames: list[np.ndarray], total: int, fps: int):
        self._frames, self._total, self._fps, self.n = frames, total, fps, 0
        self.ended = threading.Event()

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout: float) -> CameraFrame:
        import av
        if self.n >= self._total:
            self.ended.set()
            raise SourceEnded("source ended")
        image = self._frames[self.n % len(self._frames)]
        self.n += 1
        return CameraFrame(av.VideoFrame.from_numpy_buffer(image, format="yuv420p"),
                           self.n * 1_000_000_000 // self._fps)
