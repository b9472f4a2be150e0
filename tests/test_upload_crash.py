"""Power cuts during recording and upload: SIGKILL the daemon at random moments while it records
and while it sends (throttled, in resumable ranges, so a kill often lands mid-transfer). After a
restart, everything sealed before each kill reaches the account exactly once, and nothing is
left on the unit (P7)."""
from __future__ import annotations

import random
import time

import pytest

from formats.manifest import MANIFEST_FILE
from tests.media import spool_contents
from tests.test_upload import TEACHER, delivered
from formats.durable import sha256_file


def _kill_at_random(lab, server, trials: int, seed: int) -> dict[str, dict[str, str]]:
    """Kill the daemon `trials` times at random moments; returns what was sealed before the
    kills (`_sealed_so_far` after each one, merged)."""
    rng = random.Random(seed)
    sealed: dict[str, dict[str, str]] = {}
    for _ in range(trials):
        with lab.daemon() as unit:
            if rng.random() < 0.3:
                server.faults.set("slow", count=2, seconds=0.3)
            unit.control("press")
            unit.wait_state("armed")
            unit.control("pin", teacher=TEACHER, pin="432187")
            # The sleeps are the random moments of the power cuts: what this test is about.
            moment = rng.random()
            if moment < 0.2:            # while starting (tests/test_crash.py dwells on this)
                time.sleep(rng.uniform(0.0, 1.0))
            elif moment < 0.6:          # while recording, with its segments being sent
                unit.wait_state("recording")
                time.sleep(rng.uniform(0.5, 2.5))
            else:                       # after the stop, while the backlog is being sent
                unit.wait_state("recording")
                time.sleep(rng.uniform(0.8, 2.0))
                unit.control("press")
                unit.wait_state("idle")
                time.sleep(rng.uniform(0.0, 0.6))
            unit.kill()
        for recording_id, files in _sealed_so_far(lab, server).items():
            sealed.setdefault(recording_id, {}).update(files)
        server.faults.clear()
    return sealed


def _sealed_so_far(lab, server) -> dict[str, dict[str, str]]:
    """{recording: {segment: sha256}} of every segment sealed so far, read while the daemon is
    dead: those named in place in the spool (a partial one is not sealed), and those already
    confirmed by the server and purged from the spool."""
    sealed: dict[str, dict[str, str]] = {}
    for recording in lab.spooled():
        sealed[recording.name] = {p.name: sha256_file(p)
                                  for p in recording.glob("seg-*.ts.age")}
    for recording_id, files in server.stored(TEACHER).items():
        sealed.setdefault(recording_id, {}).update(
            (name, sha256) for name, (_, sha256) in files.items() if name != MANIFEST_FILE)
    return sealed


def _check(lab, server, sealed: dict[str, dict[str, str]]) -> None:
    # The kills did land mid-transfer: bodies cut short, and uploads resumed from the server's
    # offset (a HEAD answered 200 with a partial offset, then more ranges).
    cut = [r for r in server.requests_log if r["method"] == "PUT" and "error" in r]
    resumed = [r for r in server.requests_log if r["method"] == "HEAD" and r["status"] == 200]
    assert cut and resumed, (len(cut), len(resumed))
    lab.settings["upload"]["bandwidth_kbps"] = 0  # the last drain at full speed
    lab.write_config()
    with lab.daemon() as unit:  # the restart after the last kill
        unit.wait_uploaded(180)
    delivered(lab, server)  # whole recordings, each file stored once, nothing left here
    assert spool_contents(lab) == []
    # Every segment sealed before a kill is in the account, byte for byte, and nothing else: a
    # recording that sealed nothing left nothing anywhere.
    stored = {recording_id: {name: sha256 for name, (_, sha256) in files.items()
                             if name != MANIFEST_FILE}
              for recording_id, files in server.stored(TEACHER).items()}
    assert stored == {r: files for r, files in sealed.items() if files}
    started = {e["recording"] for e in lab.timeline() if e["ev"] == "recording"}
    assert set(sealed) <= started
    assert sum(map(len, sealed.values())) > 0, "no trial got as far as sealing a segment"


def test_sigkill_during_recording_and_upload_loses_and_duplicates_nothing(lab):
    with lab.account(bandwidth_kbps=160, chunk_mb=1 / 32) as server:
        sealed = _kill_at_random(lab, server, trials=10, seed=20261126)
        _check(lab, server, sealed)


@pytest.mark.slow
def test_sigkill_during_recording_and_upload_many_times(lab):
    with lab.account(bandwidth_kbps=160, chunk_mb=1 / 32) as server:
        sealed = _kill_at_random(lab, server, trials=50, seed=4)
        _check(lab, server, sealed)
