"""Finishing recordings: the manifest after a stop, and after a crash on the next start."""
from __future__ import annotations

import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capture.manifest import MANIFEST_FILE, SegmentEntry, write_manifest
from capture.sealing import remove_partials
from uploader.spool import Recording, Spool

log = logging.getLogger(__name__)


def finish(recording: Recording, device_id: str, device_key: Ed25519PrivateKey,
           ended_by: str, complete: bool = True, end: dict | None = None) -> list[SegmentEntry]:
    """Write the recording's manifest, listing every sealed segment."""
    end = end or {"monotonic": time.monotonic(), "wall": time.time()}
    return write_manifest(recording.path, recording_id=recording.recording_id,
                          teacher_id=recording.teacher_id, device_id=device_id,
                          recipient=recording.recipient, start=recording.start, end=end,
                          complete=complete, ended_by=ended_by, device_key=device_key)


def recover_interrupted(spool: Spool, device_id: str, device_key: Ed25519PrivateKey) -> int:
    """After a crash: for each recording without a manifest, delete the unfinished (ciphertext)
    segment and write a manifest marked incomplete listing every sealed one. Returns how many."""
    recovered = 0
    for recording in spool.recordings():
        if (recording.path / MANIFEST_FILE).exists():
            continue
        remove_partials(recording.path)
        if not any(recording.path.glob("seg-*.ts.age")):
            spool.discard(recording.recording_id)  # nothing was sealed: nothing to keep
            continue
        end = _last_sealed(recording)
        entries = finish(recording, device_id, device_key, "interrupted", complete=False, end=end)
        log.warning("recovered a recording interrupted by a restart: %d sealed segment(s) kept",
                    len(entries))
        recovered += 1
    return recovered


def _last_sealed(recording: Recording) -> dict:
    sidecars = sorted(recording.path.glob("seg-*.json"))
    if not sidecars:
        return dict(recording.start)
    wall = sidecars[-1].stat().st_mtime
    return {"monotonic": None, "wall": wall}
