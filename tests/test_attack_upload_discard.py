"""A discard racing the upload of the same recording (issue 13, item 11): the file is never
overwritten while it is being sent, so the server never gets zeros; the send is cut off and is
no fault; if the send won the race the discard says so; a held file of a discarded recording
stops making uploads "fail"; and two removals of one recording shred it once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

import pyrage
import pytest

from formats.manifest import segment_file
from hwsim.account_server import AccountServer
from hwsim.pki import DEVICE, TestPki
from uploader import spool as spool_module
from uploader.client import UploadClient, UploadSettings
from uploader.spool import Spool
from uploader.worker import Uploader


@pytest.fixture
def pki(tmp_path):
    return TestPki.create(tmp_path / "pki")


@pytest.fixture
def server(tmp_path, pki):
    server = AccountServer(tmp_path / "account", pki)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    yield spool
    spool.close()


def uploader_for(server, pki, spool, **settings) -> Uploader:
    device = pki.issue("unit-1", DEVICE)
    client = UploadClient(UploadSettings(
        url=server.url, ca_bundle=pki.ca_cert, client_cert=device.cert, client_key=device.key,
        connect_timeout_s=1, read_timeout_s=3, **settings))
    return Uploader(spool, client, retry_max_s=0.2, hold_s=60)


def sealed(spool: Spool, size: int, teacher: str = "t-evans"):
    rec = spool.new_recording(teacher, str(pyrage.x25519.Identity.generate().to_public()))
    data = os.urandom(size)
    (rec.path / segment_file(1)).write_bytes(data)
    spool.add(rec, segment_file(1), hashlib.sha256(data).hexdigest())
    return rec


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def receiving(server, pattern: str) -> bool:
    """The server has part of a body on disk (a whole PUT's temp file, or a partial upload)."""
    return any(p.stat().st_size > 0 for p in server.root.glob(f"*/*/{pattern}"))


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_discard_mid_send_cuts_the_body_off_and_the_server_never_gets_zeros(
        server, pki, spool, caplog):
    size = 1_000_000
    rec = sealed(spool, size)
    uploader = uploader_for(server, pki, spool, bandwidth_bps=250_000)  # about 3 s to send
    uploader.start()
    try:
        wait(lambda: receiving(server, ".*.upload"))    # bytes are flowing
        assert spool.discard(rec.recording_id) == 0      # the teacher's discard, mid-send
        assert not rec.path.exists() and spool.files() == []
        wait(lambda: any(r["method"] == "PUT" for r in server.requests_log))
        [put] = [r for r in server.requests_log if r["method"] == "PUT"]
        # The body was cut short: no 422 for zeros, no 201 for a discarded file.
        assert put["status"] is None and put["bytes"] < size
        assert put.get("error", "").startswith("client gone")
        assert server.stored("t-evans") == {}
        # Nothing of it is left on the unit, and a discard is no fault.
        wait(lambda: [p.name for p in spool.directory.iterdir()
                      if not p.name.startswith("journal")] == [])
        assert errors(caplog) == []
        assert uploader.status().failing is None
    finally:
        uploader.stop()


def test_a_send_that_wins_the_race_is_counted_by_the_discard(server, pki, spool):
    rec = sealed(spool, 2_000)
    arrived, release = threading.Event(), threading.Event()
    commit = server._store.commit

    def held_commit(*args) -> None:  # the whole body is at the server, about to be stored
        arrived.set()
        release.wait(10)
        commit(*args)

    server._store.commit = held_commit
    uploader = uploader_for(server, pki, spool)
    uploader.start()
    try:
        assert arrived.wait(10)
        said = []
        discard = threading.Thread(target=lambda: said.append(spool.discard(rec.recording_id)))
        discard.start()
        wait(lambda: not rec.path.exists())   # discarded while the server stores the file
        release.set()
        discard.join(10)
        stored = server.stored("t-evans").get(rec.recording_id, {})
        # What the pad is told is what the account holds.
        assert said == [len(stored)] == [1]
        assert spool.files() == []
    finally:
        release.set()
        uploader.stop()


def test_discarding_a_held_recording_clears_uploads_failing(server, pki, spool, caplog):
    rec = sealed(spool, 2_000, teacher="T-Evans")  # a malformed teacher id: the server says 400
    shown = []
    uploader = uploader_for(server, pki, spool)
    uploader._on_change = shown.append
    uploader.start()
    try:
        wait(lambda: uploader.status().failing is not None)
        assert "server refused a file" in uploader.status().failing
        lines = len(caplog.records)
        spool.discard(rec.recording_id)
        wait(lambda: uploader.status().failing is None, timeout=5)
        assert shown[-1].failing is None and shown[-1].backlog.files == 0
        # No journal line is timed by the teacher's discard (P9).
        assert len(caplog.records) == lines
    finally:
        uploader.stop()


def test_a_discard_and_a_forget_at_once_shred_each_file_once(spool, monkeypatch):
    rec = sealed(spool, 10_000)
    (rec.path / segment_file(2)).write_bytes(os.urandom(10_000))
    overwritten: list[str] = []
    overwrite = spool_module._overwrite

    def slow_overwrite(file):
        overwritten.append(file.name)
        time.sleep(0.2)  # hold the first shred open while the other thread comes in
        overwrite(file)

    monkeypatch.setattr(spool_module, "_overwrite", slow_overwrite)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(action):
        start.wait()
        try:
            action(rec.recording_id)
        except BaseException as e:  # noqa: BLE001 - the test reports any
            failures.append(e)

    threads = [threading.Thread(target=run, args=(a,)) for a in (spool.discard, spool.forget)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == []
    assert sorted(overwritten) == sorted(["recording.json", segment_file(1), segment_file(2)])
    assert list(spool.directory.glob(".discard-*")) == [] and not rec.path.exists()
