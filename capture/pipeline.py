"""Capture as a chain: camera + microphone -> H.264 and AAC -> `Segmenter` -> `SealingSink`.

    recorder = Recorder(camera, microphone, recording_dir, recipient, settings,
                        on_sealed=spool_it)   # called with each SegmentEntry once it is sealed
                                              # (microphone None: video only, no audio stream)
    recorder.start()                 # two threads; camera and microphone are already open
    ...
    entries = recorder.stop()        # flushes the encoders and seals the last segment

After the camera the chain takes encoded H.264 packets from one of two encoders and sends them
through the same segmenter and sealing sink (DESIGN section 3):

- a `FrameCamera` (a USB webcam, the simulator's drawn frames) gives YUV 4:2:0 pictures, which
  the chain encodes with libx264 (`capture.encoders.SoftwareH264`);
- an `EncodingCamera` (the Pi camera with picamera2's `H264Encoder`, hardware on a Pi 4; the
  simulator's twin of it) encodes them itself and writes to a `capture.encoders.PacketOutput`.

Two threads, as picamera2 splits a source from its encoder: one reads the camera (pictures or
packets) and the microphone, the other encodes, segments and seals. Video is timed by the
sensor: pts are its timestamps in microseconds since the first frame, so a frame the camera
dropped is a gap in pts (counted in the manifest as `dropped_frames`), never a shift of the rest.
The microphone is read up to each frame's time, so sound stays with the picture across a gap.

Keyframes come once a second (both encoders), and AAC at 128 kb/s, muxed into MPEG-TS, which
survives a power cut mid-file. The segmenter switches to a new segment on the first keyframe at
or after each `segment_seconds`, the way picamera2's SplittableOutput switches outputs: every
packet goes to exactly one segment, and timestamps run on across segments. Each segment is
written only through a `SealingSink`, so plaintext never reaches a disk (P4).

An error of the camera, microphone or disk stops the recording; what was captured before it is
sealed (or, for a failed segment write, that one segment is deleted) and `error` says why. A stop
returns in bounded time even if a device read or the disk never returns; `error` then says which
part did not stop.

PyAV and numpy are imported when a recording starts, not with the daemon (idle memory).
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from collections.abc import Callable

from capture.devices import CaptureError, without_frames
from capture.encoders import (VIDEO_TIME_BASE, AacEncoder, NoFrame, PacketOutput,
                              SoftwareH264)
from formats.manifest import SegmentEntry, sidecar_file
from capture.sealing import Sealed, SealingSink
from capture.zone_shapes import Zone
from formats.durable import atomic_write
from formats.media import TIMELINE_START

if TYPE_CHECKING:
    import av
    import numpy as np

log = logging.getLogger(__name__)

# Frames read ahead of the encoder: enough to overlap the two threads, few enough that a
# stop has little to flush (each 720p frame is 1.4 MB here).
QUEUE_FRAMES = 4

# A device read returns within `stall_timeout_s`, so a reader still busy this long after two
# reads' worth of that (camera, then microphone) is stuck in a device that ignores its timeout.
READ_GRACE_S = 1.0
# How often a reader waiting for a camera's encoder looks whether the recording is stopping.
STOP_POLL_S = 0.05


@dataclass(frozen=True)
class CameraFrame:
    """One picture as a camera took it."""

    picture: av.VideoFrame  # yuv420p, of the configured size
    sensor_ns: int          # when the sensor took it, in ns on a steady clock


class FrameCamera(Protocol):
    """A camera whose pictures the chain encodes."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout: float) -> CameraFrame:
        """The next picture; CaptureError after `timeout`."""
        ...


@runtime_checkable
class EncodingCamera(Protocol):
    """A camera with an H.264 encoder of its own (picamera2's `H264Encoder`)."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def start_encoding(self, output: PacketOutput, settings: CaptureSettings) -> None:
        """Encode every frame from now on into `output`, timestamped by the sensor."""
        ...

    def stop_encoding(self) -> None:
        """Stop encoding; every frame encoded has been written to the output on return (or
        CaptureError, within `stall_timeout_s`)."""
        ...


Camera = FrameCamera | EncodingCamera


class Microphone(Protocol):
    name: str
    overflows: int  # times samples were lost since open() (capture.audio); in the manifest

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
    audio_bitrate_kbps: int = 128
    x264_preset: str = "ultrafast"
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

    def __init__(self, camera: Camera, microphone: Microphone | None, directory: Path,
                 recipient: str, settings: CaptureSettings,
                 free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
                 on_sealed: Callable[[SegmentEntry], None] = lambda entry: None,
                 first_index: int = 1, start_us: int = 0):
        """`first_index` and `start_us` continue a paused recording: its segments are numbered
        on from `first_index`, and its pictures and sound timed on from `start_us` (the time of
        the frame after the last one before the pause; 1 and 0 for a new recording)."""
        self._camera = camera
        self._microphone = microphone  # None: video only (`[audio] mode = "none"`)
        self._settings = settings
        self._segmenter = Segmenter(directory, recipient, settings, free_bytes, on_sealed,
                                    audio=microphone is not None, first_index=first_index)
        self._start_us = start_us
        # The samples before `start_us`: a resumed recording's sound is timed on from there.
        self._first_sample = start_us * settings.audio_rate // 1_000_000
        self._stop = threading.Event()
        self._frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._encoder_done = threading.Event()
        self._reader = threading.Thread(target=self._read, name="capture", daemon=True)
        self._encoder = threading.Thread(target=self._encode, name="encode", daemon=True)
        self._error_lock = threading.Lock()
        self._reading: str | None = None  # the device the reader waits for, named if it hangs
        self._samples_read = self._first_sample
        self.error: CaptureError | None = None  # the first failure: its reason, not its frames
        self.frames = 0
        self._last_pts_us: int | None = None

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
        """Camera and microphone -> frames (or packets) for the encoder, until stopped or a
        device fails; then an end marker carrying the device's error, if any."""
        failure: CaptureError | None = None
        try:
            if isinstance(self._camera, EncodingCamera):
                self._read_packets(self._camera)
            else:
                self._read_pictures(self._camera)
        except CaptureError as e:  # camera or microphone: what was captured is still sealed
            failure = without_frames(e)
        except Exception as e:  # a frame that cannot be used fails like the camera
            log.exception("capture failed")
            failure = CaptureError(f"camera frame: {e}")
        self._reading = None
        self._put(_End(failure))

    def _read_pictures(self, camera: FrameCamera) -> None:
        from capture.zones import fill_zones  # numpy and Pillow: loaded when a recording starts
        s = self._settings
        first_ns = None
        while not self._stop.is_set() and not self._encoder_done.is_set():
            self._reading = camera.name
            frame = camera.read(s.stall_timeout_s)
            if first_ns is None:
                first_ns = frame.sensor_ns
            picture = frame.picture
            fill_zones(picture, s.zones)  # privacy zones: before any encoder
            picture.pts = self._start_us + (frame.sensor_ns - first_ns) // 1000
            picture.time_base = VIDEO_TIME_BASE
            self._with_sound(picture, picture.pts)

    def _read_packets(self, camera: EncodingCamera) -> None:
        s = self._settings
        output = PacketOutput()
        self._reading = camera.name
        camera.start_encoding(output, s)
        sound = True
        try:
            while (packet := self._next_packet(output)) is not None:
                packet = self._moved(packet)
                assert packet.pts is not None, "PacketOutput stamps every packet"
                self._with_sound(packet, packet.pts)
        except CaptureError:
            sound = False  # what the encoder still holds is kept, without more sound
            raise
        finally:
            self._reading = camera.name
            camera.stop_encoding()
            output.end()
            # The frames the encoder still held (with their sound, unless the recording has
            # failed): sealed like the rest.
            while not self._encoder_done.is_set() and (packet := output.next(0)) is not None:
                assert packet.pts is not None, "PacketOutput stamps every packet"
                packet = self._moved(packet)
                if sound:
                    self._with_sound(packet, packet.pts or 0)
                else:
                    self._put((packet, None))
                    self.frames += 1

    def _moved(self, packet: av.Packet) -> av.Packet:
        """`packet` timed on from `start_us` (a recording resumed after a pause)."""
        if self._start_us:
            assert packet.pts is not None, "PacketOutput stamps every packet"
            packet.pts += self._start_us
            if packet.dts is not None:
                packet.dts += self._start_us
        return packet

    def _next_packet(self, output: PacketOutput) -> av.Packet | None:
        """The encoder's next packet, or None once the recording is being stopped; `NoFrame` if
        none came within `stall_timeout_s`. Waits in short steps, so a stop is not held up by a
        camera that has just gone quiet."""
        stall_s = self._settings.stall_timeout_s
        deadline = time.monotonic() + stall_s
        self._reading = self._camera.name
        while not self._stop.is_set() and not self._encoder_done.is_set():
            try:
                packet = output.next(max(0.0, min(STOP_POLL_S, deadline - time.monotonic())))
            except NoFrame:
                if time.monotonic() >= deadline:
                    raise NoFrame(f"camera delivered no frame for {stall_s:g} s") from None
                continue
            if packet is None:
                raise CaptureError("camera: the encoder stopped")
            return packet
        return None

    def _with_sound(self, video: av.VideoFrame | av.Packet, pts_us: int) -> None:
        """Queue `video` (taken at `pts_us`) with the microphone's samples up to its end."""
        s = self._settings
        samples = None
        if self._microphone is not None:
            self._reading = self._microphone.name
            due = sound_due(s, pts_us) - self._samples_read
            samples = self._microphone.read(due, s.stall_timeout_s) if due > 0 else None
            self._samples_read += max(due, 0)
        self._reading = None
        self._put((video, samples))
        self.frames += 1
        self._last_pts_us = pts_us

    @property
    def media_time_s(self) -> float:
        """Where the lesson is now, in seconds of media: the time of the next frame after the
        last one read (the sensor's time, so frames the camera dropped do not shift it)."""
        last = self._last_pts_us
        if last is None:  # no frame yet: where this capture starts (after a pause: on from it)
            return self._start_us / 1e6
        return last / 1e6 + 1 / self._settings.fps

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
            encoders = Encoders(self._settings, audio=self._microphone is not None,
                                first_sample=self._first_sample)
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


def sound_due(s: CaptureSettings, pts_us: int) -> int:
    """Audio samples from the recording's start to the end of the frame taken at `pts_us`
    (exact for frames on the frame clock, however many)."""
    return (pts_us * s.fps + 1_000_000) * s.audio_rate // (1_000_000 * s.fps)


class Encoders:
    """H.264 (for pictures; a camera's own packets pass through) and AAC (unless `audio` is
    False: video only) for one recording."""

    def __init__(self, s: CaptureSettings, audio: bool = True, first_sample: int = 0):
        self._s = s
        self._video: SoftwareH264 | None = None  # made for the first picture
        self.audio = AacEncoder(s, first_sample) if audio else None

    def encode(self, video: av.VideoFrame | av.Packet, samples: np.ndarray | None
               ) -> list[tuple[av.Packet, bool]]:
        """Encode a picture (or take a packet) and its samples; (packet, is_video) pairs."""
        import av
        if isinstance(video, av.VideoFrame):
            if self._video is None:
                self._video = SoftwareH264(self._s)
            packets = [(p, True) for p in self._video.encode(video)]
        else:
            packets = [(video, True)]
        if samples is not None:
            if self.audio is None:
                raise CaptureError("sound was given to a video-only recording")
            packets.extend((p, False) for p in self.audio.encode(samples))
        return packets

    def flush(self) -> list[tuple[av.Packet, bool]]:
        """Everything the encoders still hold, the last short AAC frame included."""
        packets = []
        if self._video is not None:
            packets = [(p, True) for p in self._video.encode(None)]
        if self.audio is not None:
            packets.extend((p, False) for p in self.audio.flush())
        return packets


class Segmenter:
    """Routes packets into MPEG-TS segments, each behind its own `SealingSink`; with `audio`
    False the segments hold a video stream only."""

    def __init__(self, directory: Path, recipient: str, s: CaptureSettings,
                 free_bytes: Callable[[Path], int],
                 on_sealed: Callable[[SegmentEntry], None] = lambda entry: None,
                 audio: bool = True, first_index: int = 1):
        self._audio = audio
        self._first_index = first_index
        self._directory = directory
        self._recipient = recipient
        self._s = s
        self._free_bytes = free_bytes
        self._on_sealed = on_sealed
        self._segment_span = int(s.segment_seconds / VIDEO_TIME_BASE)
        self._current: _Segment | None = None
        self._waiting_audio: list[av.Packet] = []
        self._sealing = threading.Lock()  # held from a segment's entry to its report
        self._abandoned = False
        self.sealed: list[SegmentEntry] = []

    def route(self, packet: av.Packet, video: bool) -> None:
        """Send `packet` to the current segment, starting a new one on a due keyframe."""
        if packet.dts is None or packet.pts is None:  # dropping it would lose a frame or samples
            raise CaptureError("encoder gave a packet without a timestamp")
        if video and packet.time_base != VIDEO_TIME_BASE:
            raise CaptureError(f"encoder gave video timed in {packet.time_base}, not "
                               f"{VIDEO_TIME_BASE}")
        if video and packet.is_keyframe and (
                self._current is None
                or packet.pts >= self._current.first_pts + self._segment_span):
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

    def _rotate(self, first_pts: int) -> None:
        if self._current is not None:
            self._seal()
        free = self._free_bytes(self._directory)
        if free < self._s.min_free_mb * 1024 * 1024:  # the disk's free space or the quota's rest
            raise DiskFull(f"only {free // (1024 * 1024)} MB free; recording stopped with "
                           f"{len(self.sealed)} segment(s) sealed")
        self._current = _Segment(self._directory, self._first_index + len(self.sealed),
                                 self._recipient, self._s, first_pts, self._audio)
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
                 first_pts: int, audio: bool = True):
        import av
        self.index = index
        self.first_pts = first_pts
        self.last_pts = first_pts
        self.dropped_frames = 0
        # Frames dropped between two of this segment's, so that it holds `duration * fps -
        # dropped_frames` pictures (what `classcam decrypt` checks). A gap just before a
        # segment's first keyframe shows in the manifest as the distance from the last frame
        # of the segment before.
        self._previous_pts: int | None = None
        self._fps = s.fps
        self._sink = SealingSink(directory, index, recipient)
        # Written out when its buffer fills, not after every packet (FFmpeg flushes each packet
        # to an output it cannot seek): a write to the encryptor wakes its thread.
        self._container = av.open(self._sink, "w", format="mpegts",
                                  options={"flush_packets": "0"})
        self._video = self._container.add_mux_stream("h264", rate=s.fps, width=s.width,
                                                     height=s.height)
        # A mux-only stream would carry no AudioSpecificConfig, and MPEG-TS needs it to write
        # ADTS headers; an AAC stream with the encoder's settings gives the same config.
        self._audio = (self._container.add_stream("aac", rate=s.audio_rate, layout="mono")
                       if audio else None)

    def mux(self, packet: av.Packet, video: bool) -> None:
        assert packet.pts is not None and packet.dts is not None, "route() refused it otherwise"
        if video:
            if self._previous_pts is not None:
                self.dropped_frames += frames_missing(self._previous_pts, packet.pts, self._fps)
            self._previous_pts = packet.pts
            self.last_pts = max(self.last_pts, packet.pts)
        offset = int(TIMELINE_START / packet.time_base)
        packet.pts += offset
        packet.dts += offset
        if packet.dts < 0:
            raise CaptureError(f"encoder gave a packet {float(-packet.dts * packet.time_base):g} s "
                               "before the recording's start")
        stream = self._video if video else self._audio
        if stream is None:
            raise CaptureError("an audio packet for a video-only segment")
        packet.stream = stream
        self._container.mux(packet)

    def finish(self) -> SegmentEntry:
        self._container.close()
        sealed: Sealed = self._sink.finish()
        first, last = self.first_pts * VIDEO_TIME_BASE, self.last_pts * VIDEO_TIME_BASE
        return SegmentEntry(self.index, sealed.path.name, sealed.sha256,
                            float(last - first) + 1 / self._fps, float(first), float(last),
                            self.dropped_frames)

    def commit(self) -> None:
        self._sink.commit()

    def sink_abort(self) -> None:
        try:
            self._container.close()
        except Exception as e:  # its output already failed; the segment is being thrown away
            log.warning("segment %d: closing the muxer after a failure: %s", self.index, e)
        self._sink.abort()


def frames_missing(previous_pts: int, pts: int, fps: int) -> int:
    """Frames the camera dropped between two it delivered (pts in `VIDEO_TIME_BASE`): the gap
    in whole frame periods, less the one a delivered frame takes."""
    periods = round((pts - previous_pts) * VIDEO_TIME_BASE * fps)
    return max(0, periods - 1)
