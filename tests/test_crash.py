"""Power cuts: SIGKILL the daemon at random moments during recordings. After a restart every
segment sealed before the kill decrypts, each recording has a manifest saying it was
interrupted, and no partial or plaintext file is left."""
from __future__ import annotations

import random
import time

import pytest

from formats.manifest import MANIFEST_FILE, open_manifest
from formats.durable import sha256_file
from tests.media import decode_segments, identity, looks_like_plaintext_media, recording_dirs


@pytest.fixture
def lab(lab_on_each_encoder):
    """Every test here runs on both encoders (tests/conftest.py)."""
    return lab_on_each_encoder


def _kill_during_recordings(lab, trials: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    delays = []
    for _ in range(trials):
        with lab.daemon() as unit:
            unit.control("press")
            unit.wait_state("armed")
            delay = rng.uniform(0.0, 2.0)
            unit.control("pin", teacher="t-evans", pin="432187")
            time.sleep(delay)  # the random moment of the power cut: what is under test
            unit.kill()
        delays.append(delay)
    with lab.daemon():
        pass  # the restart after the last kill recovers it too
    return delays


def _check_recovered(lab) -> int:
    ident = identity(lab)
    recordings = recording_dirs(lab)
    sealed_total = 0
    for rec in recordings:
        assert list(rec.glob(".*")) == [], f"unfinished files left in {rec}"
        manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
        assert manifest.body["complete"] is False
        assert manifest.body["ended_by"] == "interrupted"
        sealed = sorted(rec.glob("seg-*.ts.age"))
        assert sealed, "a recording with nothing sealed should have been discarded"
        assert [(s.file, s.sha256) for s in manifest.segments] == [
            (p.name, sha256_file(p)) for p in sealed]
        decoded = decode_segments(rec, ident)
        assert decoded.counters == list(range(len(decoded.counters)))
        assert len(decoded.counters) == sum(round(s.duration * 25) for s in manifest.segments)
        sealed_total += len(sealed)
    for path in lab.root.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert looks_like_plaintext_media(path.read_bytes()) is None, path
    return sealed_total


def test_sigkill_at_random_moments_loses_no_sealed_segment(lab):
    _kill_during_recordings(lab, trials=20, seed=20261124)
    sealed = _check_recovered(lab)
    assert sealed > 0  # some kills came after segments were sealed
    # A kill before the first segment was sealed leaves no recording at all.
    assert 0 < len(recording_dirs(lab)) < 20


@pytest.mark.slow
def test_sigkill_many_more_times(lab):
    _kill_during_recordings(lab, trials=60, seed=7)
    _check_recovered(lab)
