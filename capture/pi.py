"""The Raspberry Pi's own capture devices: the camera through picamera2, the microphone through
sounddevice. Imported only by the `pi` hardware factory; neither library is needed elsewhere.
(Not exercised on this PC: picamera2 needs libcamera. The Pi's hardware H.264 encoder comes with
the Pi backend issue; until then frames go through the same PyAV chain as in the simulator.)

Both reads honour their timeout: picamera2 is asked to wait only that long for a frame, and the
microphone's samples arrive through a callback into a queue that a read waits on for at most that
long (PortAudio's blocking read has no timeout)."""
from __future__ import annotations

import concurrent.futures
import queue
import time

import numpy as np

from capture.devices import CaptureError

# The microphone's samples arrive in blocks of 20 ms; this many blocks (2 s) wait for a read
# before the microphone counts as overflowing.
BLOCKS_PER_SECOND = 50
BLOCKS_BUFFERED = 100


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


class SoundDeviceMicrophone:
    """A USB or I2S microphone through sounddevice (PortAudio), mono float32."""

    name = "microphone"

    def __init__(self, rate: int = 48000, device: str | None = None):
        self._rate, self._device = rate, device
        self._stream = None
        self._blocks: queue.Queue[np.ndarray] = queue.Queue(BLOCKS_BUFFERED)
        self._held: list[np.ndarray] = []  # taken from the queue, not yet read
        self._lost = False

    def open(self) -> None:
        self._blocks = queue.Queue(BLOCKS_BUFFERED)
        self._held, self._lost = [], False
        try:
            import sounddevice
            stream = sounddevice.InputStream(samplerate=self._rate, channels=1,
                                             dtype="float32", device=self._device,
                                             blocksize=self._rate // BLOCKS_PER_SECOND,
                                             callback=self._heard)
            self._stream = stream  # before start(): close() closes it if starting fails
            stream.start()
        except Exception as e:
            raise CaptureError(f"microphone: {e}") from e

    def read(self, samples: int, timeout: float) -> np.ndarray:
        """The next `samples` samples; `CaptureError` if they did not come within `timeout`."""
        if self._stream is None:
            raise CaptureError("microphone is not open")
        deadline = time.monotonic() + timeout
        held = sum(len(block) for block in self._held)
        while held < samples:
            try:
                block = self._blocks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CaptureError(f"microphone: no sound within {timeout:g} s") from None
            self._held.append(block)
            held += len(block)
        if self._lost:
            raise CaptureError("microphone: input overflow, samples were lost")
        data = np.concatenate(self._held)
        self._held = [data[samples:]] if held > samples else []
        return data[:samples]

    def _heard(self, indata: np.ndarray, frames: int, when, status) -> None:
        """PortAudio's callback, on its own thread: keep a copy of the block (its buffer is
        reused)."""
        if status.input_overflow:
            self._lost = True
        try:
            self._blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:  # nobody has read for a while: these samples are lost
            self._lost = True

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
