"""The recording manifest: which segments make up a recording, signed by the unit, encrypted to
the teacher. `classcam decrypt` refuses a recording that does not match it.

On disk (in the recording's spool directory, and in what the teacher downloads) a recording is:

    seg-000001.ts.age ... seg-NNNNNN.ts.age   age-encrypted MPEG-TS segments, index from 1
    manifest.age                              age-encrypted signed manifest (below)

The plaintext of `manifest.age` is one JSON object, the *envelope*:

    {"classcam_manifest": 1,
     "body": "<canonical JSON of the body, as a string>",
     "device_key": "<base64url raw Ed25519 public key of the unit>",
     "signature": "<base64url Ed25519 signature over DOMAIN + body bytes>"}

and the body is:

    {"recording_id": hex, "teacher_id": str, "device_id": str, "complete": bool,
     "ended_by": "stop" | "maximum length" | "fault: ..." | "interrupted",
     "start": {"monotonic": float, "wall": float}, "end": {"monotonic": float, "wall": float},
     "segments": [{"index": 1, "file": "seg-000001.ts.age", "sha256": hex of the ciphertext,
                   "duration": seconds, "first_pts": seconds, "last_pts": seconds,
                   "dropped_frames": n}, ...],
     "audio_overflows": int, "bookmarks": [seconds from the lesson's start, ...],
     "audio_mode": "room" | "teacher" | "none", "pauses": [[start, end], ...]}

`duration` runs from the first frame's time to the end of the last; `dropped_frames` counts the
frames the camera dropped within it (gaps in the sensor's timestamps), so the segment holds
`duration * fps - dropped_frames` pictures. Frames dropped just before a segment's first (a
keyframe) show as the gap between the last_pts before it and its first_pts. A manifest from
before `dropped_frames` existed lists no such key; it reads as 0.

`audio_overflows` counts the times the microphone lost samples (`capture.audio`); manifests
written before it existed lack it and are read as 0.

`bookmarks` (optional: a manifest written before bookmarks existed has none) are the moments the
teacher marked while recording (pad link `{"type": "mark"}`), in order. They are in this
encrypted manifest and nowhere else: not in the journal, the spool's plaintext files or the
upload journal (P9). `classcam decrypt` writes them as chapters into the lesson.

`audio_mode` (optional) is the unit's `[audio] mode` for the recording: "room" (the room's
microphone), "teacher" (the teacher's own microphone only) or "none" (video only: the segments
have no audio stream). A manifest written before modes existed, or by the recovery after a
crash, has none; its segments say whether there is sound (`classcam decrypt` looks).

`pauses` (optional, like `bookmarks`) are the times the teacher paused the recording (pad link
`{"type": "pause"}`), as [start, end] in seconds from the lesson's start on the room's clock
(so `end - start` is how long camera and microphone were closed), in order. The segments run on
across a pause without a gap (numbering and timestamps continue), so `classcam decrypt` joins
them into one lesson; the bookmarks are seconds of that joined lesson.

`complete` is false when the unit restarted after a crash mid-recording; the segments sealed
before the crash are all listed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from formats.keytext import b64, ed25519_public_key, fingerprint, raw_public, unb64
from formats.durable import atomic_write

VERSION = 1
DOMAIN = b"classcam manifest v1\n"
MANIFEST_FILE = "manifest.age"
_ENVELOPE = {"classcam_manifest", "body", "device_key", "signature"}
_BODY = {"recording_id", "teacher_id", "device_id", "complete", "ended_by", "start", "end",
         "segments"}
_SEGMENT = {"index", "file", "sha256", "duration", "first_pts", "last_pts", "dropped_frames"}
_SEGMENT_V1_0 = _SEGMENT - {"dropped_frames"}  # written before dropped frames were counted
_OPTIONAL = {"audio_overflows", "bookmarks", "audio_mode", "pauses"}  # keys a manifest written before
#                                                             them lacks
AUDIO_MODES = ("room", "teacher", "none")


class ManifestRejected(Exception):
    """A manifest that must not be trusted; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SegmentEntry:
    """One sealed segment as the manifest lists it."""

    index: int
    file: str
    sha256: str
    duration: float
    first_pts: float
    last_pts: float
    dropped_frames: int = 0

    def to_json(self) -> dict:
        return {"index": self.index, "file": self.file, "sha256": self.sha256,
                "duration": self.duration, "first_pts": self.first_pts,
                "last_pts": self.last_pts, "dropped_frames": self.dropped_frames}


def segment_file(index: int) -> str:
    """The file name of segment `index` (from 1)."""
    return f"seg-{index:06d}.ts.age"


def sidecar_file(index: int) -> str:
    """Where the unit keeps segment `index`'s manifest entry until the manifest is written."""
    return f"seg-{index:06d}.json"


@dataclass(frozen=True)
class Manifest:
    """A verified manifest."""

    body: dict
    device_key: Ed25519PublicKey

    @property
    def segments(self) -> list[SegmentEntry]:
        return [SegmentEntry(**s) for s in self.body["segments"]]

    @property
    def bookmarks(self) -> list[float]:
        """The moments the teacher marked, in seconds from the lesson's start, in order."""
        return [float(t) for t in self.body.get("bookmarks", [])]

    @property
    def audio_mode(self) -> str | None:
        """The `[audio] mode` the unit recorded with; None if the manifest does not say."""
        mode = self.body.get("audio_mode")
        return None if mode is None else str(mode)

    @property
    def pauses(self) -> list[tuple[float, float]]:
        """The pauses as (start, end), seconds from the lesson's start on the room's clock."""
        return [(float(a), float(b)) for a, b in self.body.get("pauses", [])]

    @property
    def device_fingerprint(self) -> str:
        return fingerprint(self.device_key)


def seal(body: dict, device_key: Ed25519PrivateKey, recipient: str) -> bytes:
    """Sign `body` with the unit's key and encrypt the envelope to the teacher's recipient."""
    if not _BODY <= set(body) <= _BODY | _OPTIONAL:
        raise ValueError(f"manifest body must have exactly {sorted(_BODY)} "
                         f"(and optionally {sorted(_OPTIONAL)})")
    text = _canonical(body)
    envelope = {"classcam_manifest": VERSION, "body": text,
                "device_key": b64(raw_public(device_key.public_key())),
                "signature": b64(device_key.sign(DOMAIN + text.encode()))}
    return pyrage.encrypt(json.dumps(envelope).encode(),
                          [pyrage.x25519.Recipient.from_str(recipient)])


def open_manifest(data: bytes, identity: pyrage.x25519.Identity) -> Manifest:
    """Decrypt and verify a manifest, or raise `ManifestRejected`."""
    try:
        plain = pyrage.decrypt(data, [identity])
    except Exception:
        raise ManifestRejected("manifest cannot be decrypted with this identity") from None
    try:
        envelope = json.loads(plain)
        if not isinstance(envelope, dict) or set(envelope) != _ENVELOPE:
            raise ValueError
        if envelope["classcam_manifest"] != VERSION:
            raise ManifestRejected(f"unsupported manifest version {envelope['classcam_manifest']!r}")
        key = ed25519_public_key(unb64(envelope["device_key"]))  # no small-order point
        signature = unb64(envelope["signature"])
        body_text = envelope["body"]
    except ManifestRejected:
        raise
    except (ValueError, TypeError, KeyError):
        raise ManifestRejected("manifest is malformed") from None
    try:
        key.verify(signature, DOMAIN + body_text.encode())
    except InvalidSignature:
        raise ManifestRejected("manifest signature does not verify") from None
    body = json.loads(body_text)
    if (not isinstance(body, dict) or not _BODY <= set(body) <= _BODY | _OPTIONAL
            or not isinstance(body["segments"], list)
            or not isinstance(body.get("audio_overflows", 0), int)):
        raise ManifestRejected("manifest body is malformed")
    if "bookmarks" in body and not _bookmarks_ok(body["bookmarks"]):
        raise ManifestRejected("manifest bookmarks are malformed")
    if body.get("audio_mode", "room") not in AUDIO_MODES:
        raise ManifestRejected("manifest audio mode is not one of " + ", ".join(AUDIO_MODES))
    if "pauses" in body and not _pauses_ok(body["pauses"]):
        raise ManifestRejected("manifest pauses are malformed")
    for i, s in enumerate(body["segments"], start=1):
        if not isinstance(s, dict) or set(s) not in (_SEGMENT, _SEGMENT_V1_0) \
                or s["index"] != i or s["file"] != segment_file(i) \
                or not isinstance(s.get("dropped_frames", 0), int) \
                or s.get("dropped_frames", 0) < 0:
            raise ManifestRejected(f"manifest segment list is malformed at entry {i}")
    return Manifest(body, key)


def write_manifest(directory: Path, *, recording_id: str, teacher_id: str, device_id: str,
                   recipient: str, start: dict, end: dict, complete: bool, ended_by: str,
                   device_key: Ed25519PrivateKey, audio_overflows: int = 0,
                   bookmarks: list[float] | tuple[float, ...] = (),
                   audio_mode: str | None = None,
                   pauses: list[tuple[float, float]] | tuple[tuple[float, float], ...] = ()
                   ) -> list[SegmentEntry]:
    """Write `manifest.age` for the sealed segments in `directory`, from their entries (which
    stay after a segment has been uploaded and purged), in index order; returns the segments it
    lists. A segment's entry is written just before it is sealed, so after a crash the caller
    first removes the entry of a segment that never was (`remove_unsealed_entries`)."""
    entries = []
    for index in range(1, 1_000_000):
        sidecar = directory / sidecar_file(index)
        if not sidecar.exists():
            break
        entries.append(SegmentEntry(**json.loads(sidecar.read_bytes())))
    body = {"recording_id": recording_id, "teacher_id": teacher_id, "device_id": device_id,
            "complete": complete, "ended_by": ended_by, "start": start, "end": end,
            "segments": [e.to_json() for e in entries], "audio_overflows": audio_overflows,
            "bookmarks": sorted(bookmarks), "pauses": [[a, b] for a, b in pauses]}
    if audio_mode is not None:
        body["audio_mode"] = audio_mode
    atomic_write(directory / MANIFEST_FILE, seal(body, device_key, recipient), mode=0o600)
    return entries





def _bookmarks_ok(marks: object) -> bool:
    return isinstance(marks, list) and all(
        isinstance(t, int | float) and not isinstance(t, bool) and 0 <= t < 1e7 for t in marks) \
        and marks == sorted(marks)


def _pauses_ok(pauses: object) -> bool:
    if not isinstance(pauses, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(t, int | float) and not isinstance(t, bool) and 0 <= t < 1e7
                for t in p) and p[0] <= p[1] for p in pauses):
        return False
    flat = [t for p in pauses for t in p]
    return flat == sorted(flat)


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)




