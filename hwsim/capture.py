"""Simulated camera and microphone.

The camera draws each frame with its number in a machine-readable strip (`read_counter` gets it
back from decoded pixels) and as text with a timestamp, for a person watching. The microphone
plays a 440 Hz tone. Both run at the real rate, or as fast as the encoder takes them
(`realtime=False`, for long lessons in tests). Open, close and every frame reach the timeline;
the `open` event is written before the device would start capturing and the `close` event after
it has stopped, so the record errs on the side of "open" when P2 is checked.

The camera gives what a Pi camera gives: YUV 4:2:0 pictures stamped in nanoseconds by its own
clock (frame n at n / fps after it opened). As `SimCamera` the chain encodes them (the USB-webcam
path); as `SimEncodingCamera` an encoder thread of the simulator's encodes them and writes to the
chain's `PacketOutput` exactly as picamera2's `H264Encoder` does (the Pi-camera path).

Faults: `camera` / `microphone` (fail to open), `camera_stall` (frames stop coming),
`camera_drop` (every other frame is dropped, as a busy camera drops them: a gap in time),
`microphone_error` (the microphone fails mid-recording), `camera_close` (will not close),
`camera_close_hang` (its close does not return while the fault is on, as a wedged driver's).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from capture.devices import CaptureError, bounded_close
from capture.pipeline import CameraFrame, CaptureSettings, Microphone
from hwsim.faults import Faults
from hwsim.timeline import Timeline

if TYPE_CHECKING:  # numpy and PyAV come with the first recording, not with the daemon
    import av
    import numpy as np

    from capture.encoders import PacketOutput
    from capture.v4l2 import V4l2Camera

COUNTER_BITS = 20
TONE_HZ = 440.0
TEACHER_TONE_HZ = 660.0  # what the teacher's own microphone hears (`[audio] mode = "teacher"`)
TONE_LEVEL = 0.25
# picamera2's YUV420 rows are padded to a multiple of this many bytes (the ISP's alignment).
STRIDE_ALIGN = 64


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
    """A camera that draws numbered frames, YUV 4:2:0, stamped by its own clock. A close that
    does not return within `close_timeout` is a `CaptureError`, as on the Pi."""

    def __init__(self, timeline: Timeline, faults: Faults, width: int, height: int, fps: int,
                 realtime: bool = True, source: V4l2Camera | None = None,
                 close_timeout: float = 2.0):
        super().__init__("camera", timeline, faults, realtime)
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0  # frames taken by the sensor (delivered or dropped)
        self._background: np.ndarray | None = None
        self._stall = threading.Event()
        self._source = source  # frames from a video file (the USB-webcam path) instead
        self._close_timeout = close_timeout
        self._opened_ns = 0
        self._keep_clock = False

    def keep_clock(self) -> None:
        """The recording is paused: when the camera opens again, its clock and frame count go
        on from before, as a sensor's would that kept running, so a resumed recording's frame
        numbers miss exactly the frames taken while it was closed."""
        self._keep_clock = True

    def open(self) -> None:
        keep, self._keep_clock = self._keep_clock, False
        taken, epoch_at, epoch_ns = self.frames, self._opened_at, self._opened_ns
        super().open()
        self._opened_ns = time.monotonic_ns()
        if keep:
            self._opened_at, self._opened_ns = epoch_at, epoch_ns
            # Frames are due at epoch + n / fps: the next one after now (or after the last
            # taken, when the camera runs faster than real time).
            self.frames = max(taken, int((time.monotonic() - epoch_at) * self.fps) + 1)
        if self._source is not None:
            self._source.open()

    def close(self) -> None:
        bounded_close(self.name, self._close, self._close_timeout)

    def _close(self) -> None:
        while "camera_close_hang" in self._faults:  # a driver that does not let go
            time.sleep(0.05)
        super().close()
        if self._source is not None:
            self._source.close()

    def read(self, timeout: float) -> CameraFrame:
        import av
        if not self.is_open:
            raise CaptureError("camera is not open")
        if "camera_stall" in self._faults:
            self._stall.wait(timeout)
            raise CaptureError(f"camera delivered no frame for {timeout:g} s")
        while True:
            n = self.frames
            self._pace(n / self.fps)
            self.frames += 1
            if not ("camera_drop" in self._faults and n % 2):
                break
            self._timeline("frame_dropped", device="camera", n=n)
        if self._source is not None:
            picture = self._source.read(timeout).picture
        else:
            if self._background is None:
                self._background = background(self.width, self.height)
            picture = av.VideoFrame.from_ndarray(draw_frame(self._background, n, self.fps),
                                                 format="yuv420p")
        self._timeline("frame", device="camera", n=n)
        return CameraFrame(picture, self._opened_ns + n * 1_000_000_000 // self.fps)

    def _reset(self) -> None:
        self.frames = 0


class SimEncodingCamera:
    """The simulated camera with an encoder of its own, as picamera2 runs `H264Encoder`: a
    thread takes each frame, encodes it (libx264 through PyAV, standing in for the Pi's
    hardware encoder) and calls `output.outputframe(bytes, keyframe, timestamp_us)`, the
    timestamp in microseconds since the first frame, from the sensor's.

    As on the Pi, privacy zones are filled by a `pre_callback` (`capture.zones`), set when
    encoding starts and run on each frame's YUV420 buffer (strided as picamera2's, rows padded
    to `STRIDE_ALIGN` bytes) before the encoder sees it."""

    def __init__(self, camera: SimCamera):
        self._camera = camera
        self.name = camera.name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: CaptureError | None = None
        self.pre_callback: Callable[[SimRequest], None] | None = None  # picamera2's

    @property
    def is_open(self) -> bool:
        return self._camera.is_open

    def open(self) -> None:
        self._camera.open()

    def close(self) -> None:
        self._camera.close()

    def probe(self) -> None:
        self._camera.probe()

    def start_encoding(self, output: PacketOutput, settings: CaptureSettings) -> None:
        from capture.zones import ZoneMask, zones_pre_callback
        # As `capture.pi.PiCamera` sets picamera2's, before the encoder starts.
        size = (self._camera.width, self._camera.height)
        self.pre_callback = (zones_pre_callback(ZoneMask.of(settings.zones, *size),
                                                mapped_array=SimMappedArray)
                             if settings.zones else None)
        self._stop.clear()
        self._failure = None
        self._thread = threading.Thread(target=self._encode, args=(output, settings),
                                        name="sim-h264", daemon=True)
        self._thread.start()

    def stop_encoding(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(self._camera._close_timeout + 1.0)
            if thread.is_alive():
                raise CaptureError("camera: the encoder did not stop")

    def _encode(self, output: PacketOutput, s: CaptureSettings) -> None:
        from capture.encoders import VIDEO_TIME_BASE, SoftwareH264
        encoder = SoftwareH264(s)
        first_ns = None
        while not self._stop.is_set() and self._camera.is_open:
            # Faster than real time, the simulator's camera waits for the chain (a real one
            # runs at its frame rate, which the chain keeps up with).
            while not self._camera._realtime and output.waiting > 4 and not self._stop.is_set():
                time.sleep(0.002)
            try:
                frame = self._camera.read(s.stall_timeout_s)
            except CaptureError:
                continue  # as picamera2's: no frame, nothing encoded; the chain's read times out
            first_ns = frame.sensor_ns if first_ns is None else first_ns
            picture = frame.picture
            if self.pre_callback is not None:  # as picamera2 runs it: before the encoder
                request = SimRequest(picture)
                self.pre_callback(request)
                picture = request.picture()
            picture.pts = (frame.sensor_ns - first_ns) // 1000
            picture.time_base = VIDEO_TIME_BASE
            for packet in encoder.encode(picture):
                output.outputframe(bytes(packet), packet.is_keyframe, packet.pts)
        for packet in encoder.encode(None):
            output.outputframe(bytes(packet), packet.is_keyframe, packet.pts)


class SimRequest:
    """One frame as picamera2's `CompletedRequest` holds it: the main stream's YUV420 buffer,
    a (height * 3/2, stride) array of Y rows, then U and V rows packed two to an array row."""

    def __init__(self, picture: av.VideoFrame):
        import numpy as np
        self.width, self.height = w, h = picture.width, picture.height
        self.stride = stride = -(-w // STRIDE_ALIGN) * STRIDE_ALIGN
        self.buffer = np.zeros((h * 3 // 2, stride), np.uint8)
        for plane, view in zip(picture.planes, self._planes(), strict=True):
            view[:] = np.frombuffer(memoryview(plane), np.uint8).reshape(
                plane.height, plane.line_size)[:, :plane.width]

    def picture(self) -> av.VideoFrame:
        """The buffer as a yuv420p frame, for the encoder."""
        import av
        import numpy as np
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, view in zip(frame.planes, self._planes(), strict=True):
            np.frombuffer(memoryview(plane), np.uint8).reshape(
                plane.height, plane.line_size)[:, :plane.width] = view
        return frame

    def _planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Y, U and V: views of the buffer."""
        w, h = self.width, self.height
        flat, s, cs, ch = self.buffer.reshape(-1), self.stride, self.stride // 2, h // 2
        return (flat[:h * s].reshape(h, s)[:, :w],
                flat[h * s:h * s + ch * cs].reshape(ch, cs)[:, :w // 2],
                flat[h * s + ch * cs:h * s + 2 * ch * cs].reshape(ch, cs)[:, :w // 2])


class SimMappedArray:
    """picamera2's `MappedArray(request, "main")` for a `SimRequest`: `.array` is its buffer,
    shared, writable."""

    def __init__(self, request: SimRequest, stream: str):
        assert stream == "main", "the simulator's camera has one stream"
        self.array = request.buffer

    def __enter__(self) -> SimMappedArray:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class SimMicrophone(_SimDevice):
    """A microphone that hears a steady tone: the room's (`TONE_HZ`), or, named
    "teacher_microphone", the teacher's own (`TEACHER_TONE_HZ`)."""

    def __init__(self, timeline: Timeline, faults: Faults, rate: int, realtime: bool = True,
                 name: str = "microphone", tone_hz: float = TONE_HZ):
        super().__init__(name, timeline, faults, realtime)
        self.rate = rate
        self.tone_hz = tone_hz
        self.samples = 0
        self.overflows = 0  # a tone never overflows

    def read(self, samples: int, timeout: float) -> np.ndarray:
        if not self.is_open:
            raise CaptureError("microphone is not open")
        if "microphone_error" in self._faults:
            raise CaptureError("microphone: simulated input overflow error")
        start = self.samples
        self._pace((start + samples) / self.rate)
        import numpy as np
        t = np.arange(start, start + samples) / self.rate
        self.samples += samples
        return (TONE_LEVEL * np.sin(2 * np.pi * self.tone_hz * t)).astype(np.float32)

    def _reset(self) -> None:
        self.samples = 0


class TracedMicrophone:
    """A real microphone (`capture.audio.SoundDeviceMicrophone`) whose open and close reach
    the timeline as the simulated devices' do, naming the sound device it reads (`source`)."""

    def __init__(self, inner: Microphone, timeline: Timeline, source: str):
        self._inner = inner
        self._timeline = timeline
        self.name = inner.name
        self.source = source
        self.is_open = False

    @property
    def overflows(self) -> int:
        return self._inner.overflows

    def open(self) -> None:
        self._timeline("device", device=self.name, phase="open", source=self.source)
        self.is_open = True
        try:
            self._inner.open()
        except CaptureError:
            self._timeline("device", device=self.name, phase="failed", source=self.source)
            raise

    def read(self, samples: int, timeout: float) -> np.ndarray:
        return self._inner.read(samples, timeout)

    def close(self) -> None:
        self._inner.close()
        self.is_open = False
        self._timeline("device", device=self.name, phase="close", source=self.source)


def draw_frame(background: np.ndarray, n: int, fps: int) -> np.ndarray:
    """Frame `n` as yuv420p planes (height * 3 / 2 rows): the counter as black/white blocks
    along the top, and as text with a time."""
    import cv2
    image = background.copy()
    w = image.shape[1]
    h = image.shape[0] * 2 // 3
    luma = image[:h]
    chroma = image[h:].reshape(h, w // 2)  # U then V, each h/2 rows of w/2
    block = counter_block(w)
    for bit in range(COUNTER_BITS):
        x0, x1 = (bit + 2) * block, (bit + 3) * block
        luma[:block, x0:x1] = 255 if (n >> bit) & 1 else 0
        chroma[:block // 2, x0 // 2:x1 // 2] = 128
        chroma[h // 2:h // 2 + block // 2, x0 // 2:x1 // 2] = 128
    seconds = n / fps
    text = f"frame {n}  {int(seconds // 60):02d}:{seconds % 60:05.2f}"
    scale = max(0.4, w / 800)
    cv2.putText(luma, text, (block, h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, int(scale * 2)), cv2.LINE_AA)
    return image


def counter_block(width: int) -> int:
    return max(8, width // (COUNTER_BITS + 4))


def read_counter(image: np.ndarray) -> int:
    """The frame number drawn by `draw_frame`, read back from (decoded) BGR pixels."""
    block = counter_block(image.shape[1])
    gray = image[block // 4: block * 3 // 4].mean(axis=(0, 2))
    n = 0
    for bit in range(COUNTER_BITS):
        centre = gray[(bit + 2) * block + block // 4:(bit + 3) * block - block // 4].mean()
        if centre > 128:
            n |= 1 << bit
    return n


def background(width: int, height: int) -> np.ndarray:
    """A soft gradient, yuv420p planes."""
    import numpy as np
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    luma = (60 + 50 * x + 40 * y).astype(np.uint8)
    u = np.broadcast_to((110 + 30 * x[::2]).astype(np.uint8), (height // 2, width // 2))
    v = np.broadcast_to((140 - 20 * y[::2]).astype(np.uint8), (height // 2, width // 2))
    return np.concatenate([luma, u.reshape(-1, width), v.reshape(-1, width)])
