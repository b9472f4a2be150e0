"""Partial uploads nobody continues expire on the reference server (issue 13, item 18): a
recording discarded mid-upload leaves a hidden partial file that its unit never comes back for.
One that is continued in time still resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import time

import pyrage
import pytest

from formats.manifest import segment_file
from hwsim.account_server import AccountServer
from hwsim.pki import DEVICE, TestPki
from uploader.client import RetryLater, UploadClient, UploadSettings, UploadTarget
from uploader.spool import Spool
from uploader.worker import Uploader


@pytest.fixture
def pki(tmp_path):
    return TestPki.create(tmp_path / "pki")


@pytest.fixture
def server(tmp_path, pki):
    server = AccountServer(tmp_path / "account", pki)  # partials expire after 7 days
    server.start()
    yield server
    server.stop()


@pytest.fixture
def expiring_server(tmp_path, pki):
    """A reference server that deletes a partial upload nobody continued for a second."""
    server = AccountServer(tmp_path / "account", pki, partial_ttl_s=1.0)
    server.start()
    yield server
    server.stop()


def client_for(server, pki, **settings) -> UploadClient:
    device = pki.issue("unit-1", DEVICE)
    return UploadClient(UploadSettings(
        url=server.url, ca_bundle=pki.ca_cert, client_cert=device.cert, client_key=device.key,
        connect_timeout_s=1, read_timeout_s=3, **settings))


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_partial_upload_cut_off_by_a_discard_expires_on_the_server(expiring_server, pki,
                                                                     tmp_path):
    server = expiring_server
    spool = Spool(tmp_path / "spool")
    rec = spool.new_recording("t-evans", str(pyrage.x25519.Identity.generate().to_public()))
    data = os.urandom(64_000)
    (rec.path / segment_file(1)).write_bytes(data)
    spool.add(rec, segment_file(1), hashlib.sha256(data).hexdigest())
    uploader = Uploader(spool, client_for(server, pki, bandwidth_bps=16_000, chunk_bytes=16_000),
                        retry_max_s=0.2, hold_s=60)
    uploader.start()
    try:
        wait(lambda: any(p.stat().st_size for p in server.root.glob("*/*/.*.partial")))
        spool.discard(rec.recording_id)
        assert spool.files() == []
        # Nobody continues it: the partial and its recording's directory go (ttl 1 s here).
        wait(lambda: not (server.root / "t-evans" / rec.recording_id).exists(), timeout=10)
        assert list(server.root.glob("*/*/.*.partial")) == []
        assert server.stored("t-evans") == {}
    finally:
        uploader.stop()
        spool.close()


def test_only_partials_nobody_continued_expire_and_the_rest_resume(server, pki, tmp_path):
    client = client_for(server, pki, chunk_bytes=10_000)
    server.faults.set("reset_mid_body", after_bytes=5_000)  # every file stops at 5000 bytes
    paths = {}
    for name in ("old", "fresh"):
        recording = os.urandom(16).hex()
        data = os.urandom(30_000)
        path = tmp_path / name
        path.write_bytes(data)
        paths[name] = (recording, path, hashlib.sha256(data).hexdigest())

    def target(name):
        recording, path, sha = paths[name]
        return UploadTarget("t-evans", recording, segment_file(1), path, sha, 30_000)

    for name in paths:
        with pytest.raises(RetryLater):
            client.put(target(name))
    partial = {name: next((server.root / "t-evans" / paths[name][0]).glob(".*.partial"))
               for name in paths}
    # Nobody continued "old" for a day; "fresh" was written just now. Expire after an hour.
    day_ago = time.time() - 86400
    os.utime(partial["old"], (day_ago, day_ago))
    expired = server._store.expire_partials(time.time() - 3600)
    assert expired == [partial["old"]]
    assert not (server.root / "t-evans" / paths["old"][0]).exists()
    # The other one resumes where it stopped, and both files arrive whole.
    server.faults.clear()
    for name in paths:
        assert client.put(target(name)).sha256 == paths[name][2]
    client.close()
