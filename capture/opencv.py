"""A camera read through OpenCV: a USB webcam (`/dev/video0`, or its index) or a video file.

    camera = OpenCvCamera("/dev/video0", width=1280, height=720)
    camera.open(); frame = camera.read(timeout=2.0); camera.close()

Frames come out BGR at the configured size (resized if the source differs). A file can `loop`,
which is how the simulator plays a recorded classroom; otherwise its end is a `CaptureError`.

OpenCV's `read()` takes no timeout and can block for good (a webcam unplugged mid-frame), so reads
run on a thread of their own and `read(timeout)` stops waiting after `timeout`. A camera whose
read has not returned refuses to close: OpenCV must not release a capture it is reading from,
and the camera may still be capturing, so the recording LED stays lit (P2).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import cv2
import numpy as np

from capture.devices import CaptureError, without_frames


class OpenCvCamera:
    """A V4L2 webcam or a video file as a camera."""

    name = "camera"

    def __init__(self, source: str | int, width: int, height: int, loop: bool = False):
        self._source = source
        self._size = (width, height)
        self._loop = loop
        self._capture: cv2.VideoCapture | None = None
        self._reads: _ReadThread | None = None

    def open(self) -> None:
        if self._capture is not None:
            self.close()  # refused earlier while a read was stuck; raises if it still is
        capture = cv2.VideoCapture(self._source)
        if not capture.isOpened():
            raise CaptureError(f"camera: cannot open {self._source}")
        self._capture = capture
        self._reads = _ReadThread(f"camera {self._source}")

    def read(self, timeout: float) -> np.ndarray:
        """The next frame; `CaptureError` if none came within `timeout` seconds."""
        capture, reads = self._capture, self._reads
        if capture is None or reads is None:
            raise CaptureError("camera is not open")
        frame = reads.call(lambda: self._next_frame(capture), timeout)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        """Release the camera; `CaptureError` (and still open) while a read has not returned."""
        capture, reads = self._capture, self._reads
        if capture is None or reads is None:
            return
        if not reads.close():
            raise CaptureError(f"camera: a read of {self._source} has not returned; "
                               "it may still be capturing")
        self._capture = self._reads = None
        capture.release()

    def _next_frame(self, capture: cv2.VideoCapture) -> np.ndarray:
        ok, frame = capture.read()
        if not ok and self._loop:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = capture.read()
        if not ok:
            raise CaptureError(f"camera: no frame from {self._source}")
        return frame


class _ReadThread:
    """Runs a device's blocking reads, one at a time, on a daemon thread of its own, so that the
    caller can stop waiting for one (and a read that never returns cannot hold up the process's
    exit)."""

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], np.ndarray] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._result: np.ndarray | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def call(self, read: Callable[[], np.ndarray], timeout: float) -> np.ndarray:
        """`read()`'s result, or `CaptureError` if it did not return within `timeout`."""
        with self._lock:
            if self._closed:
                raise CaptureError(f"{self._name} is not open")
            if not self._idle.is_set():
                raise CaptureError(f"{self._name}: an earlier read has still not returned")
            self._idle.clear()
            self._jobs.put(read)
        if not self._idle.wait(timeout):
            raise CaptureError(f"{self._name}: no frame within {timeout:g} s")
        result, error = self._result, self._error
        self._result = self._error = None
        if isinstance(error, CaptureError):
            raise error
        if error is not None:
            raise CaptureError(f"{self._name}: {error}")
        assert result is not None
        return result

    def close(self) -> bool:
        """End the thread; False (and nothing ended) while a read has not returned."""
        with self._lock:
            if not self._idle.is_set():
                return False
            self._closed = True
            self._jobs.put(None)
            return True

    def _run(self) -> None:
        while (read := self._jobs.get()) is not None:
            try:
                self._result, self._error = read(), None
            except Exception as e:  # handed to the caller, without this thread's frames
                self._result, self._error = None, without_frames(e)
            del read  # holds the capture: nothing of it stays here between reads
            self._idle.set()
