"""`classcam decrypt`, on the teacher's own computer: a downloaded recording -> one lesson video.

    lesson = decrypt_recording(Path("rec"), identity, Path("lesson.mp4"), KnownDevices(path),
                               device_fingerprint="f968:528b:...", recording_id="9f0c...")

Nothing is joined until the whole recording checks out: the manifest opens with the teacher's
identity, its signature verifies, it was signed by the unit the teacher trusts (pinned by
fingerprint, or remembered from an earlier recording of that unit; a unit seen for the first time
is trusted only when the teacher says so), it is the manifest of the recording asked for, and
every segment file is the one the manifest lists at that place. A segment that is missing,
reordered, altered, duplicated, from another recording or not listed is refused with the reason.
Then the segments are decrypted in memory one at a time and their packets copied into one MP4
without re-encoding, readable by its owner alone (0600) from its first byte. The teacher's
bookmarks (in the manifest) become the MP4's chapters, which ordinary players list: one from the
start to the first bookmark, then one from each bookmark to the next, or to the end.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from typing import TYPE_CHECKING

import av
import pyrage

from formats.manifest import MANIFEST_FILE, Manifest, ManifestRejected, SegmentEntry, open_manifest
from formats.media import TIMELINE_START
from formats.durable import atomic_write, sha256_file

if TYPE_CHECKING:
    from av.container.core import Chapter  # a TypedDict of PyAV's type stubs only


class RecordingRefused(Exception):
    """The recording cannot be trusted as it is; `reasons` says every problem found."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Lesson:
    """What was written, and what the manifest says about it."""

    output: Path
    segments: int
    video_frames: int
    seconds: float
    device_id: str
    device_fingerprint: str
    device_first_seen: bool
    complete: bool
    ended_by: str
    recording_id: str
    audio_mode: str | None = None  # the unit's [audio] mode, if the manifest says


class KnownDevices:
    """Units the teacher has received recordings from: device id -> key fingerprint, kept in a
    small JSON file. The first recording from a unit is trusted and remembered; a later manifest
    for that unit signed by any other key is refused."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def default(cls) -> KnownDevices:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return cls(base / "classcam" / "known_devices.json")

    def fingerprint(self, device_id: str) -> str | None:
        return self._read().get(device_id)

    def remember(self, device_id: str, fingerprint: str) -> None:
        known = self._read()
        known[device_id] = fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (json.dumps(known, indent=2, sort_keys=True) + "\n").encode())

    def _read(self) -> dict[str, str]:
        try:
            known = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise RecordingRefused([f"{self.path} is corrupt; fix or remove it"]) from None
        return known if isinstance(known, dict) else {}


def decrypt_recording(directory: Path, identity: pyrage.x25519.Identity, output: Path,
                      known: KnownDevices | None = None,
                      device_fingerprint: str | None = None, *,
                      recording_id: str | None = None,
                      trust_new_unit: bool = False) -> Lesson:
    """Check the recording in `directory` against its manifest and join it into `output`.
    Raises `RecordingRefused` (and writes nothing) if anything does not match.

    The unit must be pinned by `device_fingerprint` or already in `known`; a unit in neither is
    refused, with its fingerprint to compare, unless `trust_new_unit`. With `recording_id`, the
    manifest must be that recording's (a server could serve another recording under its id)."""
    manifest = _open(directory, identity)
    device_id = manifest.body["device_id"]
    first_seen = _check_device(manifest, device_id, known, device_fingerprint, trust_new_unit)
    if recording_id is not None and manifest.body["recording_id"] != recording_id:
        raise RecordingRefused([f"these files are recording {manifest.body['recording_id']!r:.40}"
                                f", not recording {recording_id} asked for"])
    entries = manifest.segments
    problems = check_segments(directory, entries)
    if problems:
        raise RecordingRefused(problems)
    if not entries:
        raise RecordingRefused(["the manifest lists no segments"])
    frames = _join(directory, entries, identity, output, chapters(manifest.bookmarks, entries),
                   manifest.audio_mode)
    if first_seen and known is not None:
        known.remember(device_id, manifest.device_fingerprint)
    return Lesson(output, len(entries), frames, sum(e.duration for e in entries), device_id,
                  manifest.device_fingerprint, first_seen, manifest.body["complete"],
                  manifest.body["ended_by"], manifest.body["recording_id"], manifest.audio_mode)


def check_segments(directory: Path, entries: list[SegmentEntry]) -> list[str]:
    """Every way the segment files in `directory` differ from the manifest's list (empty when
    each listed file is present with its listed hash and nothing else is there)."""
    present = {p.name: sha256_file(p) for p in sorted(directory.glob("seg-*.ts.age"))}
    listed = {e.file for e in entries}
    index_of_hash = {e.sha256: e.index for e in entries}
    copies: dict[str, int] = {}
    for found in present.values():
        copies[found] = copies.get(found, 0) + 1
    problems = []
    for e in entries:
        digest = present.get(e.file)
        if digest is None:
            problems.append(f"segment {e.index} ({e.file}) is missing")
        elif digest == e.sha256 and copies[digest] == 1:
            continue
        elif copies[digest] > 1:
            problems.append(f"{e.file} is duplicated: the same content is in {copies[digest]} files")
        elif digest in index_of_hash:
            problems.append(f"{e.file} holds segment {index_of_hash[digest]}, not segment "
                            f"{e.index}: segments are reordered")
        else:
            problems.append(f"{e.file} does not match the manifest: altered, or from another "
                            "recording")
    for name in sorted(set(present) - listed):
        problems.append(f"{name} is not listed in the manifest")
    return problems


def _open(directory: Path, identity: pyrage.x25519.Identity) -> Manifest:
    try:
        data = (directory / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise RecordingRefused([f"{MANIFEST_FILE} is missing: the recording cannot be checked "
                                "(has it finished uploading?)"]) from None
    try:
        return open_manifest(data, identity)
    except ManifestRejected as e:
        raise RecordingRefused([e.reason]) from None


def _check_device(manifest: Manifest, device_id: str, known: KnownDevices | None,
                  pinned: str | None, trust_new: bool) -> bool:
    """Refuse a manifest not signed by the trusted unit; True if this unit is new to `known`."""
    signed_by = manifest.device_fingerprint
    expected = known.fingerprint(device_id) if known is not None else None
    if pinned is not None:
        if _normal(pinned) != _normal(signed_by):
            raise RecordingRefused([f"manifest is signed by device key {signed_by}, not the "
                                    f"key {pinned} given"])
        return known is not None and expected is None
    if expected is not None:
        if _normal(expected) != _normal(signed_by):
            raise RecordingRefused([f"manifest for {device_id} is signed by device key "
                                    f"{signed_by}, but {device_id} is known by key {expected} "
                                    "(re-signed by another key?)"])
        return False
    if not trust_new:
        # Trusting whatever key the first manifest names would let whoever serves the files
        # sign them: the teacher compares the fingerprint with the unit's, or says to trust it.
        raise RecordingRefused([f"unit {device_id!r:.80} is not known here and no device "
                                f"fingerprint was given: its manifest key is {signed_by}; compare "
                                "it with `classcam keys device` on the unit, then give it with "
                                "--device-fingerprint (or --trust-new-unit)"])
    return True


def chapters(bookmarks: list[float], entries: list[SegmentEntry]) -> list[Chapter]:
    """The lesson's chapters for `bookmarks` (seconds from its start): "Start" up to the first
    bookmark (an MP4 chapter track has no gap before its first chapter), then "Bookmark N" from
    each to the next, the last to the end of the lesson. None without bookmarks."""
    if not bookmarks or not entries:
        return []
    last = entries[-1]
    end = last.last_pts + (last.duration - (last.last_pts - last.first_pts))  # + one frame
    starts = sorted({min(max(0.0, t), end) for t in bookmarks})
    titled = [(t, f"Bookmark {n}") for n, t in enumerate(starts, start=1)]
    if starts[0] > 0:
        titled.insert(0, (0.0, "Start"))
    ms = [round(t * 1000) for t, _ in titled] + [round(end * 1000)]
    marks: list[Chapter] = [
        {"id": i + 1, "start": ms[i], "end": max(ms[i + 1], ms[i]),
         "time_base": Fraction(1, 1000), "metadata": {"title": title}}
        for i, (_, title) in enumerate(titled)]
    return marks


def _join(directory: Path, entries: list[SegmentEntry], identity: pyrage.x25519.Identity,
          output: Path, marks: list[Chapter], audio_mode: str | None = None) -> int:
    """Copy every segment's packets, in order, into one MP4 with `marks` as its chapters;
    returns the video frames. A video-only recording (`audio_mode` "none") has no audio
    stream, and gives a lesson without one; every segment must have the streams the first
    has."""
    tmp = output.with_name(f".{output.name}.partial")
    frames = 0
    try:
        tmp.unlink(missing_ok=True)  # left by an interrupted run
        # Made here, 0600 and new, before FFmpeg opens it by name (as +faststart needs): the
        # lesson is never readable by others, whatever the umask, not even for a moment.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise RecordingRefused([f"cannot write {tmp}: {e.strerror}"]) from None
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            if marks:
                out.set_chapters(marks)  # before the header: the muxer makes its track then
            streams = None
            for entry in entries:
                plain = pyrage.decrypt((directory / entry.file).read_bytes(), [identity])
                with av.open(io.BytesIO(plain), "r", format="mpegts") as segment:
                    if not segment.streams.video:
                        raise RecordingRefused([f"{entry.file} holds no video"])
                    video = segment.streams.video[0]
                    audio = segment.streams.audio[0] if segment.streams.audio else None
                    if audio is not None and audio_mode == "none":
                        raise RecordingRefused([f"{entry.file} holds sound, but the manifest "
                                                "says the unit recorded video only"])
                    kept = [s for s in (video, audio) if s is not None]
                    if streams is None:
                        streams = {s.index: out.add_stream_from_template(s) for s in kept}
                    elif set(streams) != {s.index for s in kept}:
                        raise RecordingRefused([f"{entry.file} does not have the streams the "
                                                "first segment has"])
                    in_segment, first_pts = 0, None
                    for packet in segment.demux(*kept):
                        if packet.dts is None:  # the demuxer's end-of-stream marker
                            continue
                        if packet.pts is None:  # a refusal with its reason, not a TypeError
                            raise RecordingRefused([f"{entry.file} holds a packet without a "
                                                    "presentation time"])
                        if packet.stream.index == video.index:
                            in_segment += 1
                            if first_pts is None:
                                first_pts = float(packet.pts * packet.time_base - TIMELINE_START)
                        # Back from the segments' timeline origin to 0, so a player does not
                        # show a second of nothing first (AAC's priming packet goes below 0,
                        # which MP4 keeps in an edit list).
                        origin = int(TIMELINE_START / packet.time_base)
                        packet.pts -= origin
                        packet.dts -= origin
                        packet.stream = streams[packet.stream.index]
                        out.mux(packet)
                _check_content(entry, in_segment, first_pts)
                frames += in_segment
        os.replace(tmp, output)
    except av.FFmpegError as e:
        raise RecordingRefused([f"cannot join the segments: {e}"]) from None
    finally:
        tmp.unlink(missing_ok=True)
    return frames


def _check_content(entry: SegmentEntry, frames: int, first_pts: float | None) -> None:
    """The decrypted segment holds the frames, from the time, its manifest entry says. (The
    hashes already match; this catches a unit that listed what it did not write.)"""
    interval = entry.duration - (entry.last_pts - entry.first_pts)  # one frame's duration
    # The frames the camera dropped are a gap in time, not pictures.
    expected = round(entry.duration / interval) - entry.dropped_frames if interval > 0 else -1
    if frames != expected:
        raise RecordingRefused([f"{entry.file} holds {frames} video frames, the manifest says "
                                f"{expected}"])
    if first_pts is None or abs(first_pts - entry.first_pts) > interval / 2:
        raise RecordingRefused([f"{entry.file} starts at {first_pts} s, the manifest says "
                                f"{entry.first_pts} s"])


def _normal(fingerprint: str) -> str:
    return fingerprint.replace(":", "").strip().lower()
