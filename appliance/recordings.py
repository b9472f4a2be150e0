"""Finishing recordings: the manifest after a stop, and after a crash on the next start.

    entries = finish(recording, spool, device_id, device_key, ended_by="stop pressed")
    recover_interrupted(spool, device_id, device_key)    # at start-up, after spool.recover()

Either way the manifest is sealed like a segment and queued in the spool for upload. The spool
keeps no start time on the card (P9): after a crash the manifest's start and end are read back
from the segments' own file times, which the card shows anyway. The teacher's bookmarks are held
in memory only until the manifest is written, so a crash loses them (never the recording).
"""
from __future__ import annotations

import json
import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from formats.manifest import (AUDIO_MODES, MANIFEST_FILE, SegmentEntry, segment_file, sidecar_file,
                              write_manifest)
from capture.sealing import remove_partials
from formats.durable import fsync_dir, sha256_file
from uploader.spool import Recording, Spool

log = logging.getLogger(__name__)


def finish(recording: Recording, spool: Spool, device_id: str, device_key: Ed25519PrivateKey,
           ended_by: str, complete: bool = True, end: dict | None = None,
           audio_overflows: int = 0,
           bookmarks: list[float] | tuple[float, ...] = (),
           audio_mode: str | None = None,
           pauses: tuple[tuple[float, float], ...] = ()) -> list[SegmentEntry]:
    """Write the recording's manifest, listing every sealed segment, how often the microphone
    lost samples, the teacher's `bookmarks` (seconds from its start; they are kept nowhere
    else), the `[audio] mode` it was recorded in and its `pauses`, and queue it for upload."""
    end = end or {"monotonic": time.monotonic(), "wall": time.time()}
    start = recording.start or _first_sealed(recording)
    entries = write_manifest(recording.path, recording_id=recording.recording_id,
                             teacher_id=recording.teacher_id, device_id=device_id,
                             recipient=recording.recipient, start=start, end=end,
                             complete=complete, ended_by=ended_by, device_key=device_key,
                             audio_overflows=audio_overflows, bookmarks=bookmarks,
                             audio_mode=audio_mode, pauses=pauses)
    path = recording.path / MANIFEST_FILE
    spool.add(recording, MANIFEST_FILE, sha256_file(path))
    return entries


def recover_interrupted(spool: Spool, device_id: str, device_key: Ed25519PrivateKey) -> int:
    """After a crash: for each recording without a manifest, delete the unfinished (ciphertext)
    segment and write a manifest marked incomplete listing every sealed one, including those
    already uploaded. A recording that sealed nothing is removed. Returns how many were kept."""
    recovered = 0
    for recording in spool.recordings():
        if (recording.path / MANIFEST_FILE).exists() or spool.knows(recording.recording_id,
                                                                    MANIFEST_FILE):
            continue
        remove_partials(recording.path)
        _remove_unsealed_entry(recording, spool)
        if not (recording.path / sidecar_file(1)).exists():
            spool.forget(recording.recording_id)  # nothing was sealed: nothing to keep
            continue
        end = _last_sealed(recording)
        entries = finish(recording, spool, device_id, device_key, "interrupted", complete=False,
                         end=end, audio_mode=_known(recording.audio_mode))
        log.warning("recovered a recording interrupted by a restart: %d sealed segment(s) kept",
                    len(entries))
        recovered += 1
    return recovered


def _known(audio_mode: str | None) -> str | None:
    """The mode a recording's directory says it was made in, if it is one a manifest may say."""
    return audio_mode if audio_mode in AUDIO_MODES else None


def _remove_unsealed_entry(recording: Recording, spool: Spool) -> None:
    """A segment's entry is written just before the segment is renamed into place: a crash in
    between leaves an entry for a segment that was never sealed. It is the last one, if any."""
    sidecars = sorted(recording.path.glob("seg-*.json"))
    if not sidecars:
        return
    last = sidecars[-1]
    index = int(last.stem.removeprefix("seg-"))
    name = segment_file(index)
    if not (recording.path / name).exists() and not spool.knows(recording.recording_id, name):
        last.unlink()
        fsync_dir(recording.path)


def _last_sealed(recording: Recording) -> dict:
    sidecars = sorted(recording.path.glob("seg-*.json"))
    if not sidecars:
        return {"monotonic": None, "wall": None}
    wall = sidecars[-1].stat().st_mtime
    return {"monotonic": None, "wall": wall}


def _first_sealed(recording: Recording) -> dict:
    """When a recording read back from the disk started, as its first segment's file time
    says: that entry is written as the segment is sealed, one segment's duration after."""
    sidecar = recording.path / sidecar_file(1)
    try:
        duration = float(json.loads(sidecar.read_bytes())["duration"])
        return {"monotonic": None, "wall": sidecar.stat().st_mtime - duration}
    except (OSError, ValueError, KeyError, TypeError):
        return {"monotonic": None, "wall": None}
