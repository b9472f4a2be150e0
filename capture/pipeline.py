"""Capture as a chain: camera + microphone -> `Encoders` -> `Segmenter` -> `SealingSink`.

    recorder = Recorder(camera, microphone, recording_dir, recipient, settings,
                        on_sealed=spool_it)   # called with each SegmentEntry once it is sealed
    recorder.start()                 # two threads; camera and microphone are already open
    ...
    entries = recorder.stop()        # flushes the encoders and seals the last segment

Two threads, as picamera2 splits a source from its encoder: one reads the camera and microphone
and converts each frame for the encoder, the other encodes, segments and seals. PyAV lets go of
Python's lock while it converts and while x264 encodes, so the two overlap (about a third more
frames a second than one thread doing both; bench/capture_vs_ffmpeg.py).

H.264 (libx264, one keyframe a second, no B-frames) and AAC are encoded with PyAV and muxed into
MPEG-TS, which survives a power cut mid-file. The segmenter switches to a new segment on the first
keyframe at or after each `segment_seconds`, the way picamera2's SplittableOutput switches
outputs: every packet goes to exactly one segment, and timestamps run on across segments. Each
segment is written only through a `SealingSink`, so plaintext never reaches a disk (P4).

An error of the camera, microphone or disk stops the recording; what was captured before it is
sealed (or, for a failed segment write, that one segment is deleted) and `error` says why. A stop
returns in bounded time even if a device read or the disk never returns; `error` then says which
part did not stop.
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol
from collections.abc import Callable

import av
import numpy as np

from capture.devices import CaptureError, without_frames
from formats.manifest import SegmentEntry, sidecar_file
from capture.sealing import Sealed, SealingSink
from capture.zones import Zone, fill_zones
from formats.durable import atomic_write
from formats.media import TIMELINE_START

log = logging.getLogger(__name__)

# Frames converted ahead of the encoder: enough to overlap the two threads, few enough that a
# stop has little to flush (each 720p frame is 1.4 MB here).
QUEUE_FRAMES = 4

# A device read returns within `stall_timeout_s`, so a reader still busy this long after two
# reads' worth of that (camera, then microphone) is stuck in a device that ignores its timeout.
READ_GRACE_S = 1.0


class Camera(Protocol):
    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout: float) -> np.ndarray:
        """The next frame, BGR uint8 of the configured size; CaptureError after `timeout`."""
        ...


class Microphone(Protocol):
    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, samples: int, timeout: float) -> np.ndarray:
        """The next `samples` mono float32 samples in [-1, 1]; CaptureError after `timeout`."""
        ...


@dataclass(frozen=True)
class CaptureSettings:
    width: int = 1280
    height: int = 720
    fps: int = 25
    segment_seconds: int = 10
    audio_rate: int = 48000
    video_bitrate_kbps: int = 2500
    x264_preset: str = "veryfast"
    min_free_mb: float = 200
    stall_timeout_s: float = 2.0
    # The longest a stop waits for the encoder to flush and seal the last segment.
    seal_timeout_s: float = 15.0
    # privacy zones: filled in every frame before any encoder (capture/zones.py)
    zones: tuple[Zone, ...] = ()


class DiskFull(CaptureError):
    """Too little free space to start another segment."""


class Recorder:
    """Runs the capture chain on its own threads."""

    def __init__(self, camera: Camera, microphone: Microphone, directory: Path, recipient: str,
                 settings: CaptureSettings,
                 free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
                 on_sealed: Callable[[SegmentEntry], None] = lambda entry: None,
                 first_frame: int = 0, first_index: int = 1):
        """`first_frame` and `first_index` continue a paused recording: its frames are timed
        on from there and its segments numbered on (both 0 and 1 for a new recording)."""
        self._camera = camera
        self._microphone = microphone
        self._settings = settings
        self._segmenter = Segmenter(directory, recipient, settings, free_bytes, on_sealed,
                                    first_index)
        self._first_frame = first_frame
        self._stop = threading.Event()
        self._frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._encoder_done = threading.Event()
        self._reader = threading.Thread(target=self._read, name="capture", daemon=True)
        self._encoder = threading.Thread(target=self._encode, name="encode", daemon=True)
        self._error_lock = threading.Lock()
        self._reading: str | None = None  # the device the reader waits for, named if it hangs
        self.error: CaptureError | None = None  # the first failure: its reason, not its frames
        self.frames = first_frame

    def start(self) -> None:
        self._encoder.start()
        self._reader.start()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def stop(self) -> list[SegmentEntry]:
        """Stop capturing, seal the last segment; returns every sealed segment in order.

        Returns within about `2 * stall_timeout_s + READ_GRACE_S + seal_timeout_s`, whatever the
        devices and the disk do. A thread that has not stopped by then is left behind and
        `error` says so: a device whose read never returned may still be open, and a segment
        not sealed by then is never sealed (it would be missing from the manifest)."""
        self._stop.set()
        s = self._settings
        waited = 2 * s.stall_timeout_s + READ_GRACE_S
        self._reader.join(waited)
        sealed_by = time.monotonic() + s.seal_timeout_s
        if self._reader.is_alive() and self._reading is not None:  # not waiting for the encoder
            stuck = CaptureError(f"{self._reading}: a read did not return within {waited:g} s; "
                                 "capture did not stop")
            # The encoder seals what it has without waiting for the reader.
            self._put(_End(stuck), patience=s.seal_timeout_s)
            self._fail(stuck)
        self._encoder.join(max(0.0, sealed_by - time.monotonic()))
        sealing_ended = self._segmenter.abandon()
        if self._encoder.is_alive() or not sealing_ended:
            self._fail(CaptureError(f"encoder: the last segment was not sealed within "
                                    f"{s.seal_timeout_s:g} s; capture did not stop"))
        return list(self._segmenter.sealed)

    def _read(self) -> None:
        """Camera and microphone -> frames ready for the encoder, until stopped or a device
        fails; then an end marker carrying the device's error, if any."""
        s = self._settings
        failure: CaptureError | None = None
        try:
            while not self._stop.is_set() and not self._encoder_done.is_set():
                self._reading = self._camera.name
                image = self._camera.read(s.stall_timeout_s)
                self._reading = self._microphone.name
                samples = self._microphone.read(samples_for_frame(s, self.frames),
                                                s.stall_timeout_s)
                self._reading = None
                frame = picture(image, self.frames)
                fill_zones(frame, s.zones)  # privacy zones: before any encoder
                self._put((frame, samples))
                self.frames += 1
        except CaptureError as e:  # camera or microphone: what was captured is still sealed
            failure = without_frames(e)
        except Exception as e:  # a frame that cannot be converted fails like the camera
            log.exception("capture failed")
            failure = CaptureError(f"camera frame: {e}")
        self._reading = None
        self._put(_End(failure))

    def _put(self, item: tuple | _End, patience: float | None = None) -> None:
        # Never blocks for good: if the encoder has died there is no one to take it.
        deadline = None if patience is None else time.monotonic() + patience
        while not self._encoder_done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fail(self, error: CaptureError) -> None:
        """Keep the first failure's reason (only: its frames would keep this recorder, its
        encoders and their threads alive)."""
        with self._error_lock:
            if self.error is None:
                self.error = without_frames(error)

    def _encode(self) -> None:
        """Frames -> encoders -> segmenter -> sealed segments, until the end marker."""
        try:
            encoders = Encoders(self._settings)
            encoders.start_at(self._first_frame)
            while not isinstance(item := self._frames.get(), _End):
                for packet, video in encoders.encode(*item):
                    self._segmenter.route(packet, video)
            if item.failure is not None:
                self._fail(item.failure)
            for packet, video in encoders.flush():
                self._segmenter.route(packet, video)
            self._segmenter.close()
        except CaptureError as e:  # the sink or the disk: that segment is lost, not others
            self._fail(e)
            self._segmenter.abort()
        except Exception as e:  # an encoder error is a capture error too, never a silent stop
            log.exception("capture failed")
            self._fail(CaptureError(f"encoder: {e}"))
            self._segmenter.abort()
        finally:
            self._encoder_done.set()


@dataclass(frozen=True)
class _End:
    """The reader has stopped; `failure` is the device error that stopped it, if any."""

    failure: CaptureError | None


def picture(image: np.ndarray, n: int) -> av.VideoFrame:
    """Frame `n` (BGR) as the encoder takes it: YUV 4:2:0, timed in frames."""
    frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    frame.pts = n
    return frame


def samples_for_frame(s: CaptureSettings, n: int) -> int:
    """Audio samples that belong with video frame `n` (exact over any number of frames)."""
    r, f = s.audio_rate, s.fps
    return (n + 1) * r // f - n * r // f


class Encoders:
    """H.264 and AAC encoders for one recording, with continuous timestamps."""

    def __init__(self, s: CaptureSettings):
        self._s = s
        self.video = av.CodecContext.create("libx264", "w")
        self.video.width, self.video.height = s.width, s.height
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = Fraction(1, s.fps)
        self.video.framerate = Fraction(s.fps)
        self.video.gop_size = s.fps  # a keyframe every second: segments cut within a second
        self.video.bit_rate = s.video_bitrate_kbps * 1000
        self.video.options = {"preset": s.x264_preset, "tune": "zerolatency"}
        self.video.open()
        self.audio = av.CodecContext.create("aac", "w")
        self.audio.sample_rate = s.audio_rate
        self.audio.layout = "mono"
        self.audio.format = "fltp"
        self.audio.time_base = Fraction(1, s.audio_rate)
        self.audio.open()
        self._fifo = av.AudioFifo()
        self._samples_in = 0  # the FIFO times its frames from 0: see `start_at`
        self._audio_offset = 0

    def start_at(self, first_frame: int) -> None:
        """Continue a paused recording from video frame `first_frame`: AAC packets are moved on
        by the samples of the frames before it (exact, as `samples_for_frame`)."""
        self._audio_offset = first_frame * self._s.audio_rate // self._s.fps

    def encode(self, frame: av.VideoFrame, samples: np.ndarray) -> list[tuple[av.Packet, bool]]:
        """Encode a `picture()` and its samples; returns (packet, is_video) pairs."""
        packets = [(p, True) for p in self.video.encode(frame)]
        chunk = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32),
                                           format="fltp", layout="mono")
        chunk.sample_rate = self._s.audio_rate
        chunk.time_base = self.audio.time_base  # so the FIFO's frames carry timestamps on
        chunk.pts = self._samples_in
        self._samples_in += samples.shape[-1]
        self._fifo.write(chunk)
        while (aac := self._fifo.read(self.audio.frame_size)) is not None:
            packets.extend((p, False) for p in self._moved(self.audio.encode(aac)))
        return packets

    def _moved(self, packets: list[av.Packet]) -> list[av.Packet]:
        """AAC packets timed on after the frames before `first_frame`. Resumed after a pause,
        the encoder's priming packet (before its first sample) is dropped: it would overlap the
        last packet before the pause, and timestamps must only grow across the recording."""
        if not self._audio_offset:
            return packets
        kept = []
        for packet in packets:
            if packet.pts is not None and packet.dts is not None:  # else route() refuses it
                if packet.dts < 0:
                    continue
                packet.pts += self._audio_offset
                packet.dts += self._audio_offset
            kept.append(packet)
        return kept

    def flush(self) -> list[tuple[av.Packet, bool]]:
        """Everything the encoders still hold, the last short AAC frame included."""
        packets = [(p, True) for p in self.video.encode(None)]
        rest = self._fifo.read()
        if rest is not None:
            packets.extend((p, False) for p in self._moved(self.audio.encode(rest)))
        packets.extend((p, False) for p in self._moved(self.audio.encode(None)))
        return packets


class Segmenter:
    """Routes packets into MPEG-TS segments, each behind its own `SealingSink`."""

    def __init__(self, directory: Path, recipient: str, s: CaptureSettings,
                 free_bytes: Callable[[Path], int],
                 on_sealed: Callable[[SegmentEntry], None] = lambda entry: None,
                 first_index: int = 1):
        self._directory = directory
        self._first_index = first_index
        self._recipient = recipient
        self._s = s
        self._free_bytes = free_bytes
        self._on_sealed = on_sealed
        self._segment_frames = s.segment_seconds * s.fps
        self._current: _Segment | None = None
        self._waiting_audio: list[av.Packet] = []
        self._sealing = threading.Lock()  # held from a segment's entry to its report
        self._abandoned = False
        self.sealed: list[SegmentEntry] = []

    def route(self, packet: av.Packet, video: bool) -> None:
        """Send `packet` to the current segment, starting a new one on a due keyframe."""
        if packet.dts is None or packet.pts is None:  # dropping it would lose a frame or samples
            raise CaptureError("encoder gave a packet without a timestamp")
        if video and packet.is_keyframe and (
                self._current is None
                or packet.pts >= self._current.first_frame + self._segment_frames):
            self._rotate(packet.pts)
        if self._current is None:  # audio before the first keyframe waits for its segment
            self._waiting_audio.append(packet)
            return
        self._current.mux(packet, video)

    def close(self) -> None:
        """Seal the current segment."""
        if self._current is not None:
            self._seal()

    def abort(self) -> None:
        """Give up the current segment: its partial ciphertext is deleted."""
        if self._current is not None:
            self._current.sink_abort()
            self._current = None

    def abandon(self, patience: float = 1.0) -> bool:
        """From now on seal nothing more (for a stop that has stopped waiting: a segment sealed
        after it would be missing from the manifest). False if a segment is being sealed and
        its disk did not finish within `patience`."""
        if not self._sealing.acquire(timeout=patience):
            return False
        self._abandoned = True
        self._sealing.release()
        return True

    def _rotate(self, first_frame: int) -> None:
        if self._current is not None:
            self._seal()
        free = self._free_bytes(self._directory)
        if free < self._s.min_free_mb * 1024 * 1024:  # the disk's free space or the quota's rest
            raise DiskFull(f"only {free // (1024 * 1024)} MB free; recording stopped with "
                           f"{len(self.sealed)} segment(s) sealed")
        self._current = _Segment(self._directory, self._first_index + len(self.sealed),
                                 self._recipient,
                                 self._s, first_frame)
        for packet in self._waiting_audio:
            self._current.mux(packet, False)
        self._waiting_audio.clear()

    def _seal(self) -> None:
        # The segment stays current until it has its name: if finishing it fails, abort()
        # still ends its encryptor thread and pipe and deletes its partial ciphertext.
        segment = self._current
        assert segment is not None, "_seal is called only with a current segment"
        entry = segment.finish()
        sidecar = self._directory / sidecar_file(entry.index)
        with self._sealing:
            if self._abandoned:
                raise CaptureError(f"segment {entry.index}: the recording was stopped before "
                                   "it was sealed")
            # The entry is durable before the segment takes its name, so every sealed segment
            # is in the manifest, even once it has been uploaded and purged from the spool.
            atomic_write(sidecar, json.dumps(entry.to_json()).encode(), mode=0o600)
            try:
                segment.commit()
            except BaseException:
                # Not sealed, so not listed: the manifest must list exactly what was sealed.
                (self._directory / entry.file).unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
                raise
            self._current = None
            self.sealed.append(entry)
            self._on_sealed(entry)


class _Segment:
    def __init__(self, directory: Path, index: int, recipient: str, s: CaptureSettings,
                 first_frame: int):
        self.index = index
        self.first_frame = first_frame
        self.last_frame = first_frame
        self._fps = s.fps
        self._sink = SealingSink(directory, index, recipient)
        self._container = av.open(self._sink, "w", format="mpegts")
        self._video = self._container.add_mux_stream("h264", rate=s.fps, width=s.width,
                                                     height=s.height)
        # A mux-only stream would carry no AudioSpecificConfig, and MPEG-TS needs it to write
        # ADTS headers; an AAC stream with the encoder's settings gives the same config.
        self._audio = self._container.add_stream("aac", rate=s.audio_rate, layout="mono")

    def mux(self, packet: av.Packet, video: bool) -> None:
        assert packet.pts is not None and packet.dts is not None, "route() refused it otherwise"
        if video:
            self.last_frame = max(self.last_frame, packet.pts)
        offset = int(TIMELINE_START / packet.time_base)
        packet.pts += offset
        packet.dts += offset
        if packet.dts < 0:
            raise CaptureError(f"encoder gave a packet {float(-packet.dts * packet.time_base):g} s "
                               "before the recording's start")
        packet.stream = self._video if video else self._audio
        self._container.mux(packet)

    def finish(self) -> SegmentEntry:
        self._container.close()
        sealed: Sealed = self._sink.finish()
        frames = self.last_frame - self.first_frame + 1
        return SegmentEntry(self.index, sealed.path.name, sealed.sha256, frames / self._fps,
                            self.first_frame / self._fps, self.last_frame / self._fps)

    def commit(self) -> None:
        self._sink.commit()

    def sink_abort(self) -> None:
        try:
            self._container.close()
        except Exception as e:  # its output already failed; the segment is being thrown away
            log.warning("segment %d: closing the muxer after a failure: %s", self.index, e)
        self._sink.abort()
