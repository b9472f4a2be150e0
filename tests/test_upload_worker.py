"""The upload worker on its own, against the in-process reference server: a recording discarded
while its file is being retried is dropped quietly, and the queue moves on."""
from __future__ import annotations

import hashlib
import logging
import os
import time

import pyrage
import pytest

from formats.manifest import segment_file
from hwsim.account_server import AccountServer
from hwsim.pki import DEVICE, TestPki
from uploader.client import UploadClient, UploadSettings
from uploader.spool import Spool
from uploader.worker import Uploader


@pytest.fixture
def setup(tmp_path):
    pki = TestPki.create(tmp_path / "pki")
    server = AccountServer(tmp_path / "account", pki)
    server.start()
    device = pki.issue("unit-1", DEVICE)
    client = UploadClient(UploadSettings(url=server.url, ca_bundle=pki.ca_cert,
                                         client_cert=device.cert, client_key=device.key,
                                         connect_timeout_s=1, read_timeout_s=2))
    spool = Spool(tmp_path / "spool")
    uploader = Uploader(spool, client, retry_max_s=0.2, hold_s=60)
    yield server, spool, uploader
    uploader.stop()
    spool.close()
    server.stop()


def sealed(spool: Spool, teacher: str = "t-evans"):
    rec = spool.new_recording(teacher, str(pyrage.x25519.Identity.generate().to_public()))
    data = os.urandom(2000)
    (rec.path / segment_file(1)).write_bytes(data)
    spool.add(rec, segment_file(1), hashlib.sha256(data).hexdigest())
    return rec


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_recording_discarded_while_its_file_is_retried_is_dropped_quietly(setup, caplog):
    server, spool, uploader = setup
    server.faults.set("refuse")
    first = sealed(spool)
    uploader.start()
    wait(lambda: uploader.status().failing is not None)  # retrying the first file
    spool.discard(first.recording_id)                    # the teacher's discard
    server.faults.clear("refuse")
    second = sealed(spool, "t-jones")
    wait(lambda: spool.recordings() == [second] and spool.backlog().files == 0)
    assert server.stored("t-evans") == {}
    assert list(server.stored("t-jones")) == [second.recording_id]
    assert uploader.status().failing is None
    # The outage was a fault; the discard was not. The worker itself writes no journal line
    # about uploads (their timing follows recordings, P9): the health tick reports its news.
    news = uploader.take_period()
    assert news.failure is not None and news.failure.startswith("cannot reach the server")
    assert news.answered
    assert [r.message for r in caplog.records if r.levelno >= logging.ERROR] == []
