"""Simulated camera and microphone.

The camera draws each frame with its number in a machine-readable strip (`read_counter` gets it
back from decoded pixels) and as text with a timestamp, for a person watching. The microphone
plays a 440 Hz tone. Both run at the real rate, or as fast as the encoder takes them
(`realtime=False`, for long lessons in tests). Open, close and every frame reach the timeline;
the `open` event is written before the device would start capturing and the `close` event after
it has stopped, so the record errs on the side of "open" when P2 is checked.

Faults: `camera` / `microphone` (fail to open), `camera_stall` (frames stop coming),
`microphone_error` (the microphone fails mid-recording), `camera_close` (will not close).
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from capture.devices import CaptureError
from capture.opencv import OpenCvCamera
from hwsim.faults import Faults
from hwsim.timeline import Timeline

COUNTER_BITS = 20
TONE_HZ = 440.0
TONE_LEVEL = 0.25


class _SimDevice:
    def __init__(self, name: str, timeline: Timeline, faults: Faults, realtime: bool):
        self.name = name
        self.is_open = False
        self._timeline = timeline
        self._faults = faults
        self._realtime = realtime
        self._opened_at = 0.0

    def open(self) -> None:
        self._timeline("device", device=self.name, phase="open")
        self.is_open = True
        self._opened_at = time.monotonic()
        self._reset()
        if self.name in self._faults:
            self._timeline("device", device=self.name, phase="failed")
            raise CaptureError(f"{self.name}: simulated failure to open")

    def probe(self) -> None:
        """For `classcam doctor`: is the device there, without opening it (P1)? The `camera` or
        `microphone` fault makes it missing. Leaves no trace on the timeline."""
        if self.name in self._faults:
            raise CaptureError(f"{self.name}: not found")

    def close(self) -> None:
        if f"{self.name}_close" in self._faults:
            raise CaptureError(f"{self.name}: simulated failure to close")
        self.is_open = False
        self._timeline("device", device=self.name, phase="close")

    def _pace(self, due_after_open: float) -> None:
        if self._realtime:
            delay = self._opened_at + due_after_open - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _reset(self) -> None:
        pass


class SimCamera(_SimDevice):
    """A camera that draws numbered frames."""

    def __init__(self, timeline: Timeline, faults: Faults, width: int, height: int, fps: int,
                 realtime: bool = True, source: OpenCvCamera | None = None):
        super().__init__("camera", timeline, faults, realtime)
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self._background = background(width, height)
        self._stall = threading.Event()
        self._source = source  # frames from a video file (the USB-webcam path) instead

    def open(self) -> None:
        super().open()
        if self._source is not None:
            self._source.open()

    def close(self) -> None:
        super().close()
        if self._source is not None:
            self._source.close()

    def read(self, timeout: float) -> np.ndarray:
        if not self.is_open:
            raise CaptureError("camera is not open")
        if "camera_stall" in self._faults:
            self._stall.wait(timeout)
            raise CaptureError(f"camera delivered no frame for {timeout:g} s")
        n = self.frames
        self._pace(n / self.fps)
        if self._source is not None:
            image = self._source.read(timeout)
        else:
            image = draw_frame(self._background, n, self.fps)
        self.frames += 1
        self._timeline("frame", device="camera", n=n)
        return image

    def _reset(self) -> None:
        self.frames = 0


class SimMicrophone(_SimDevice):
    """A microphone that hears a steady tone."""

    def __init__(self, timeline: Timeline, faults: Faults, rate: int, realtime: bool = True):
        super().__init__("microphone", timeline, faults, realtime)
        self.rate = rate
        self.samples = 0
        self.overflows = 0  # a tone never overflows

    def read(self, samples: int, timeout: float) -> np.ndarray:
        if not self.is_open:
            raise CaptureError("microphone is not open")
        if "microphone_error" in self._faults:
            raise CaptureError("microphone: simulated input overflow error")
        start = self.samples
        self._pace((start + samples) / self.rate)
        t = np.arange(start, start + samples) / self.rate
        self.samples += samples
        return (TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)

    def _reset(self) -> None:
        self.samples = 0


def draw_frame(background: np.ndarray, n: int, fps: int) -> np.ndarray:
    """Frame `n`: the counter as black/white blocks along the top, and as text with a time."""
    image = background.copy()
    h, w = image.shape[:2]
    block = max(8, w // (COUNTER_BITS + 4))
    for bit in range(COUNTER_BITS):
        if (n >> bit) & 1:
            image[:block, (bit + 2) * block:(bit + 3) * block] = 255
        else:
            image[:block, (bit + 2) * block:(bit + 3) * block] = 0
    seconds = n / fps
    text = f"frame {n}  {int(seconds // 60):02d}:{seconds % 60:05.2f}"
    scale = max(0.4, w / 800)
    cv2.putText(image, text, (block, h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(scale * 2)), cv2.LINE_AA)
    return image


def read_counter(image: np.ndarray) -> int:
    """The frame number drawn by `draw_frame`, read back from (decoded) BGR pixels."""
    h, w = image.shape[:2]
    block = max(8, w // (COUNTER_BITS + 4))
    gray = image[block // 4: block * 3 // 4].mean(axis=(0, 2))
    n = 0
    for bit in range(COUNTER_BITS):
        centre = gray[(bit + 2) * block + block // 4:(bit + 3) * block - block // 4].mean()
        if centre > 128:
            n |= 1 << bit
    return n


def background(width: int, height: int) -> np.ndarray:
    x = np.linspace(40, 120, width, dtype=np.float32)
    y = np.linspace(30, 90, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x + y) / 2
    image[..., 1] = y + 20
    image[..., 2] = x
    return image
