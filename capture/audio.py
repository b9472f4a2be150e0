"""The unit's sound devices through sounddevice (PortAudio): finding them by name, and the
microphone. Imported by the hardware backends that use real sound devices; nothing else needs
PortAudio.

    initialise()                                   # at start-up, before any lesson (P9)
    problem = check_devices("Headphones", "USB Audio")  # None, or why not to arm (P3)
    mic = SoundDeviceMicrophone(48000, "USB Audio")

The microphone is read by a thread of its own into a queue that holds `BUFFER_S` seconds, from
a PortAudio stream with an explicit `LATENCY_S` of ALSA buffer: the capture chain may stall
for seconds without losing a sample (PortAudio's default, about 35 ms on a Pi, overflowed at
any longer stall). A blocking stream and our own thread rather than a PortAudio callback: cffi
makes a callback in write+execute memory, which the unit's `MemoryDenyWriteExecute=yes` refuses
(`MemoryError` at open); the thread does the same job, releasing Python's lock while it waits.

Overflows: samples lost, either in the sound card (PortAudio reports an input overflow) or in
the queue (nobody read for `BUFFER_S`), are counted in `overflows` (the manifest carries the
count). Samples lost from the queue are replaced by as many zeros, so sound stays in time with
the picture. A recording ends only if overflows persist: `MAX_OVERFLOWS` of them within
`OVERFLOW_WINDOW_S` seconds.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capture.devices import CaptureError

if TYPE_CHECKING:  # numpy is imported when a microphone is read, not when the daemon starts
    import numpy as np

BLOCK_S = 0.02          # the reader thread takes the microphone's samples 20 ms at a time
BUFFER_S = 5.0          # what the queue holds while the capture chain does not read
LATENCY_S = 0.2         # the sound card's own buffer, asked of PortAudio explicitly
MAX_OVERFLOWS = 5       # this many overflows ...
OVERFLOW_WINDOW_S = 60.0  # ... within this long end the recording
CLOSE_TIMEOUT_S = 2.0   # the reader thread returns within one block; this bounds a dead device

# PortAudio builds its list of devices when it is initialised and keeps it; the list is rebuilt
# (to see a speaker unplugged since) only while no stream of ours is open: re-initialising
# PortAudio closes every open stream. Held while a stream opens, plays or closes.
PORTAUDIO = threading.Lock()
_streams_open = 0  # microphone streams open (a notice holds PORTAUDIO while it plays)
# Names that do not say which card they reach. ALSA's default is HDMI on a headless Pi.
UNNAMED = {"default", "sysdefault"}

_alsa_quiet = None  # alsa-lib's error handler, kept alive for as long as the process


def initialise() -> None:
    """Load PortAudio now, at start-up, with alsa-lib's error messages silenced: PortAudio's
    first use probes every ALSA device and alsa-lib prints to stderr for each one that is not
    there, and a line printed when a lesson starts would say when it did (P9)."""
    global _alsa_quiet
    name = ctypes.util.find_library("asound")
    if name is not None and _alsa_quiet is None:
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                        ctypes.c_int, ctypes.c_char_p)
        _alsa_quiet = handler_type(lambda *args: None)
        ctypes.CDLL(name).snd_lib_error_set_handler(_alsa_quiet)
    import sounddevice  # noqa: F401  (initialises PortAudio)


@dataclass(frozen=True)
class SoundDevice:
    """A device PortAudio found for a configured name."""

    name: str
    rate: int  # its default sample rate


def check_devices(speaker: str | None, microphone: str | None, allow_hdmi: bool = False
                  ) -> str | None:
    """Why the speaker or the microphone of these names (None: not checked) cannot be used, or
    None: missing, or HDMI unless `allow_hdmi`. Rebuilds PortAudio's list of devices first, so
    a device unplugged since start-up is missing."""
    with PORTAUDIO:
        import sounddevice
        if not _streams_open:  # sounddevice's own way to list devices afresh
            sounddevice._terminate()
            sounddevice._initialize()
        for role, kind, name in (("speaker", "output", speaker),
                                 ("microphone", "input", microphone)):
            if name is None:
                continue
            found = find_device(name, kind)
            if isinstance(found, str):
                return f"{role} {name!r}: {found}"
            if not allow_hdmi and is_hdmi(found.name):
                what = ("ALSA's default, HDMI on a headless Pi" if found.name in UNNAMED
                        else "HDMI")
                return (f"{role} {name!r} is {what}; name the room's device in [audio], or "
                        "set allow_hdmi = true")
    return None


def find_device(name: str, kind: str) -> SoundDevice | str:
    """The `kind` ("input" or "output") device PortAudio knows by `name`, or why not."""
    import sounddevice
    try:
        info = sounddevice.query_devices(name, kind)
    except ValueError as e:  # none, or several, match
        return str(e).splitlines()[0]
    except Exception as e:
        return f"cannot list sound devices: {e}"
    return SoundDevice(str(info["name"]), int(info["default_samplerate"]))


def is_hdmi(device_name: str) -> bool:
    """Whether a PortAudio device name is (or may be) an HDMI output."""
    return device_name in UNNAMED or "hdmi" in device_name.lower()


def _opened(change: int) -> None:
    """Count a stream opened (+1) or closed (-1); called holding PORTAUDIO."""
    global _streams_open
    _streams_open += change


class SoundDeviceMicrophone:
    """A USB or I2S microphone through sounddevice (PortAudio), mono float32; `name` is what
    errors and the journal call it."""

    def __init__(self, rate: int = 48000, device: str | None = None, name: str = "microphone"):
        self.name = name
        self._rate, self._device = rate, device
        self._block = max(1, int(rate * BLOCK_S))
        self._stream = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._blocks: queue.Queue[np.ndarray] = queue.Queue(self._queued_blocks())
        self._held: list[np.ndarray] = []  # taken from the queue, not yet read
        self._lock = threading.Lock()      # the counts, shared with the reader thread
        self._recent: collections.deque[float] = collections.deque()  # when overflows were
        self._gap = 0                      # samples lost from the queue, not yet made up
        self._error: str | None = None     # why the reader thread stopped
        self.overflows = 0

    def open(self) -> None:
        self._blocks = queue.Queue(self._queued_blocks())
        self._held, self._recent, self._gap, self._error = [], collections.deque(), 0, None
        self.overflows = 0
        self._stop.clear()
        try:
            import sounddevice
            with PORTAUDIO:
                stream = sounddevice.InputStream(samplerate=self._rate, channels=1,
                                                 dtype="float32", device=self._device,
                                                 blocksize=self._block, latency=LATENCY_S)
                self._stream = stream  # before start(): close() closes it if starting fails
                _opened(+1)
                stream.start()
        except Exception as e:
            raise CaptureError(f"{self.name}: {e}") from e
        self._reader = threading.Thread(target=self._listen, args=(stream,), name="microphone",
                                        daemon=True)
        self._reader.start()

    def read(self, samples: int, timeout: float) -> np.ndarray:
        """The next `samples` samples; `CaptureError` if they did not come within `timeout`,
        or if overflows persist (`MAX_OVERFLOWS` within `OVERFLOW_WINDOW_S`)."""
        if self._stream is None:
            raise CaptureError("microphone is not open")
        deadline = time.monotonic() + timeout
        held = sum(len(block) for block in self._held)
        while held < samples:
            try:
                block = self._blocks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CaptureError(self._error or f"{self.name}: no sound within {timeout:g} s"
                                   ) from None
            self._held.append(block)
            held += len(block)
        if self._persisting():
            raise CaptureError(f"{self.name}: input overflowed {MAX_OVERFLOWS} times within "
                               f"{OVERFLOW_WINDOW_S:g} s; samples were lost")
        import numpy as np
        data = np.concatenate(self._held)
        self._held = [data[samples:]] if held > samples else []
        return data[:samples]

    def close(self) -> None:
        """Stop the reader thread, then the stream. `CaptureError` if the thread is still in
        PortAudio after `CLOSE_TIMEOUT_S`: the device may still be capturing (P2)."""
        stream, self._stream = self._stream, None
        reader, self._reader = self._reader, None
        self._stop.set()
        if reader is not None:
            reader.join(CLOSE_TIMEOUT_S)
            if reader.is_alive():
                self._stream = stream
                self._reader = reader
                raise CaptureError(f"{self.name}: a read did not return within "
                                   f"{CLOSE_TIMEOUT_S:g} s; it may still be open")
        if stream is not None:
            with PORTAUDIO:
                try:
                    stream.stop()
                finally:
                    stream.close()
                    _opened(-1)

    def _queued_blocks(self) -> int:
        return max(1, int(BUFFER_S / BLOCK_S))

    def _listen(self, stream) -> None:
        """The reader thread: the sound card's blocks into the queue until closed."""
        try:
            while not self._stop.is_set():
                data, overflowed = stream.read(self._block)
                if overflowed:
                    self._overflowed()
                self._keep(data[:, 0].copy())
        except Exception as e:  # the device went away: reads say why once the queue is empty
            self._error = f"{self.name}: {e}"

    def _keep(self, block: np.ndarray) -> None:
        try:
            if self._gap:
                # Samples were lost from a full queue: as many zeros keep the sound in time with
                # the picture.
                import numpy as np
                self._blocks.put_nowait(np.zeros(self._gap, np.float32))
                self._gap = 0
            self._blocks.put_nowait(block)
        except queue.Full:  # nobody has read for BUFFER_S: these samples are lost
            if not self._gap:
                self._overflowed()
            self._gap += len(block)

    def _overflowed(self) -> None:
        with self._lock:
            self.overflows += 1
            self._recent.append(time.monotonic())

    def _persisting(self) -> bool:
        """Whether `MAX_OVERFLOWS` overflows happened within the last `OVERFLOW_WINDOW_S`."""
        with self._lock:
            while self._recent and self._recent[0] < time.monotonic() - OVERFLOW_WINDOW_S:
                self._recent.popleft()
            return len(self._recent) >= MAX_OVERFLOWS
