"""The encoders of the capture chain, and the seam between a camera's own encoder and the chain.

    video = SoftwareH264(settings)           # PyAV libx264: a USB webcam, the simulator
    packets = video.encode(picture)          # a yuv420p VideoFrame, pts in microseconds

    output = PacketOutput()                  # picamera2's H264Encoder (or the simulator's
    output.outputframe(data, keyframe, timestamp_us)   # twin) calls this, as it calls an Output
    packet = output.next(timeout)            # the same av.Packets as SoftwareH264 gives

Either way the chain gets H.264 packets whose pts are the sensor's timestamps in microseconds
since the recording's first frame (`VIDEO_TIME_BASE`), one keyframe every second (the segmenter
cuts on them), and no B-frames. A dropped frame is a gap in those pts, never a shift.

`PacketOutput` splits the encoder's byte stream into access units with FFmpeg's H.264 parser
(PyAV `CodecContext.parse`; no NAL parsing of ours). picamera2's encoders call `outputframe` once
per encoded frame, so each call's timestamp and keyframe flag go to the access unit that starts
in it; the parser hands a unit on when the next one begins, and `end()` flushes the last. A
count that does not match (a call without a picture, or one with two) fails the recording.
"""
from __future__ import annotations

import collections
import queue
import threading
from fractions import Fraction
from typing import TYPE_CHECKING

from capture.devices import CaptureError

if TYPE_CHECKING:  # PyAV is imported when a recording starts, not when the daemon does
    import av
    import numpy as np

    from capture.pipeline import CaptureSettings

# picamera2 stamps encoded frames in microseconds since the first one: so does the chain.
VIDEO_TIME_BASE = Fraction(1, 1_000_000)
# Encoded frames waiting for the chain: a stall longer than this many (seconds at 25 fps) is a
# chain that has stopped taking them, and the recording fails rather than grow without end.
OUTPUT_BACKLOG = 250


class SoftwareH264:
    """libx264 through PyAV, set as picamera2's own software path sets it (`LibavH264Encoder`:
    tune zerolatency, so no B-frames; frame threads) with the configured preset and rate."""

    def __init__(self, s: CaptureSettings):
        import av
        self._context = context = av.CodecContext.create("libx264", "w")
        context.width, context.height = s.width, s.height
        context.pix_fmt = "yuv420p"
        context.time_base = VIDEO_TIME_BASE
        context.framerate = Fraction(s.fps)
        context.gop_size = keyframe_period(s)
        context.bit_rate = s.video_bitrate_kbps * 1000
        context.options = {"preset": s.x264_preset, "tune": "zerolatency"}
        # As picamera2 sets it: x264's frame threads (its choice of how many), which take less
        # CPU per frame than zerolatency's sliced threads; the frames they hold come out at
        # the flush.
        context.thread_count = 0
        context.thread_type = av.codec.context.ThreadType.FRAME
        context.open()

    def encode(self, picture: av.VideoFrame | None) -> list[av.Packet]:
        """Packets for `picture` (None: everything still held)."""
        return list(self._context.encode(picture))


def keyframe_period(s: CaptureSettings) -> int:
    """Frames from one keyframe to the next, for every encoder: one a second, so a segment is
    cut within a second of its due time."""
    return s.fps


class AacEncoder:
    """AAC at `audio_bitrate_kbps` (FFmpeg's default rate distorts a pure tone) from mono
    float32 samples, timed in samples since the recording's first (`first_sample` for the
    first given: a recording resumed after a pause)."""

    def __init__(self, s: CaptureSettings, first_sample: int = 0):
        import av
        self._rate = s.audio_rate
        self._context = context = av.CodecContext.create("aac", "w")
        context.sample_rate = s.audio_rate
        context.layout = "mono"
        context.format = "fltp"
        context.time_base = Fraction(1, s.audio_rate)
        context.bit_rate = s.audio_bitrate_kbps * 1000
        context.open()
        self._fifo = av.AudioFifo()
        self._first_sample = first_sample
        self._samples_in = 0  # the FIFO times its frames from 0 (PyAV checks): moved on below

    def encode(self, samples: np.ndarray) -> list[av.Packet]:
        import av
        import numpy as np
        if not len(samples):
            return []
        chunk = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32),
                                           format="fltp", layout="mono")
        chunk.sample_rate = self._rate
        chunk.time_base = self._context.time_base  # so the FIFO's frames carry timestamps on
        chunk.pts = self._samples_in
        self._samples_in += samples.shape[-1]
        self._fifo.write(chunk)
        packets = []
        while (aac := self._fifo.read(self._context.frame_size)) is not None:
            packets.extend(self._context.encode(aac))
        return self._after_first(packets)

    def flush(self) -> list[av.Packet]:
        """Everything still held, the last short AAC frame included."""
        packets = []
        rest = self._fifo.read()
        if rest is not None:
            packets.extend(self._context.encode(rest))
        packets.extend(self._context.encode(None))
        return self._after_first(packets)

    def _after_first(self, packets: list[av.Packet]) -> list[av.Packet]:
        """Packets timed on from `first_sample`. Resumed after a pause, the encoder's priming
        packet (timed before its first sample) would overlap the last one before the pause: it
        is dropped, so timestamps only grow across the recording."""
        if not self._first_sample:
            return packets
        kept = []
        for packet in packets:
            if packet.pts is not None and packet.dts is not None:  # else the segmenter refuses it
                if packet.dts < 0:
                    continue
                packet.pts += self._first_sample
                packet.dts += self._first_sample
            kept.append(packet)
        return kept


class NoFrame(CaptureError):
    """No encoded frame came within the time a read waited."""


class PacketOutput:
    """What a camera's own H.264 encoder writes to: picamera2's `Output` interface
    (`outputframe`), read by the chain as av.Packets (`next`). Called on the encoder's thread;
    never blocks it. An encoder that hands over something the chain cannot use (no timestamp,
    bytes that are not H.264) fails the recording at the chain's next read."""

    def __init__(self) -> None:
        import av
        self._parser = av.CodecContext.create("h264", "r")
        self._stamps: collections.deque[tuple[int, bool]] = collections.deque()
        self._packets: queue.Queue[av.Packet | _Ended] = queue.Queue()
        self._lock = threading.Lock()  # the parser is fed by the encoder and flushed by `end`
        self._ended = False

    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: object = None,
                    audio: bool = False) -> None:
        """picamera2's `Output.outputframe`: `frame` holds encoded H.264, `timestamp` is in
        microseconds since the encoder's first frame (its sensor timestamp). Audio packets are
        not ours: the chain encodes the microphone itself."""
        if audio:
            return
        with self._lock:
            if self._ended:
                return
            if frame is None or timestamp is None:
                self._fail("the encoder gave a frame without data or a timestamp")
                return
            self._stamps.append((int(timestamp), bool(keyframe)))
            try:
                units = self._parser.parse(bytes(frame))
            except Exception as e:
                self._fail(f"the encoder's output is not H.264: {e}")
                return
            self._deliver(units)

    def end(self) -> None:
        """The encoder has stopped: what the parser holds is the last access unit."""
        with self._lock:
            if self._ended:
                return
            try:
                self._deliver(self._parser.parse(None))
            except Exception as e:
                self._fail(f"the encoder's last frame is not H.264: {e}")
                return
            if self._stamps:
                self._fail(f"{len(self._stamps)} encoded frame(s) held no picture")
                return
            self._ended = True
            self._packets.put(_Ended(None))

    def next(self, timeout: float) -> av.Packet | None:
        """The next encoded frame; None once `end()` has delivered the last; `CaptureError` if
        none came within `timeout` or the encoder's output was unusable."""
        try:
            item = self._packets.get(timeout=timeout)
        except queue.Empty:
            raise NoFrame(f"camera delivered no frame for {timeout:g} s") from None
        if isinstance(item, _Ended):
            self._packets.put(item)  # stays ended for every later read
            if item.failure is not None:
                raise CaptureError(f"camera: {item.failure}")
            return None
        return item

    @property
    def waiting(self) -> int:
        """Encoded frames the chain has not taken yet."""
        return self._packets.qsize()

    def _deliver(self, units: list[av.Packet]) -> None:
        for unit in units:
            if not self._stamps:  # more pictures than the encoder said it gave
                self._fail("the encoder's output held more pictures than frames")
                return
            unit.pts, keyframe = self._stamps.popleft()
            unit.dts = unit.pts
            # The encoder's word (V4L2's keyframe flag), or the parser's reading of the
            # bitstream (an IDR picture), which PyAV passes on from 18.
            unit.is_keyframe = unit.is_keyframe or keyframe
            unit.time_base = VIDEO_TIME_BASE
            if self._packets.qsize() >= OUTPUT_BACKLOG:
                self._fail(f"more than {OUTPUT_BACKLOG} encoded frames waited for the chain")
                return
            self._packets.put(unit)

    def _fail(self, reason: str) -> None:
        self._ended = True
        self._packets.put(_Ended(reason))


class _Ended:
    """No more packets: the encoder stopped (`failure` None) or gave something unusable."""

    def __init__(self, failure: str | None):
        self.failure = failure
