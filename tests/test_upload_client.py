"""The upload client against the reference server, one attempt at a time: what each answer
becomes (stored, retry later, refused), resuming, the bandwidth cap, and the HTTPS-only rule."""
from __future__ import annotations

import email.utils
import hashlib
import os
import time

import pytest

from hwsim.account_server import AccountServer
from hwsim.pki import DEVICE, TestPki
from uploader.client import (Refused, RetryLater, UploadClient, UploadSettings, UploadTarget,
                             _retry_after)

RECORDING = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("account")
    pki = TestPki.create(root / "pki")
    server = AccountServer(root / "store", pki)
    server.start()
    server.device = pki.issue("unit-1", DEVICE)
    server.pki = pki
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_faults(server):
    server.faults.clear()


def client(server, **settings) -> UploadClient:
    settings = {"connect_timeout_s": 2, "read_timeout_s": 3, **settings}
    return UploadClient(UploadSettings(
        url=server.url, ca_bundle=server.pki.ca_cert, client_cert=server.device.cert,
        client_key=server.device.key, **settings))


def target(tmp_path, size: int, name: str = "seg-000001.ts.age",
           recording: str = RECORDING) -> UploadTarget:
    data = os.urandom(size)
    path = tmp_path / f"{recording}-{name}"
    path.write_bytes(data)
    return UploadTarget("t-evans", recording, name, path, hashlib.sha256(data).hexdigest(), size)


def fresh_recording() -> str:
    return os.urandom(16).hex()


def test_a_file_is_stored_and_a_repeat_is_the_same_answer(server, tmp_path):
    t = target(tmp_path, 50_000, recording=fresh_recording())
    c = client(server)
    assert c.put(t).sha256 == t.sha256
    assert c.put(t).sha256 == t.sha256  # idempotent: a retry is a success, not a copy
    assert server.created().count(("t-evans", t.recording_id, t.name)) == 1


def test_a_large_file_goes_in_ranges_and_resumes_where_the_server_got_to(server, tmp_path):
    t = target(tmp_path, 300_000, recording=fresh_recording())
    server.faults.set("reset_mid_body", count=1)
    c = client(server, chunk_bytes=64 * 1024)
    with pytest.raises(RetryLater):
        c.put(t)
    before = len(server.requests_log)
    stored = c.put(t)
    assert stored.sha256 == t.sha256 and stored.size == 300_000
    again = server.requests_log[before:]
    assert again[0]["method"] == "HEAD" and again[0]["status"] in (200, 404)
    assert sum(r["bytes"] for r in again) <= 300_000  # nothing sent twice after the HEAD


@pytest.mark.parametrize("fault, kw, reason", [
    ("error_500", {}, "server answered 500"),
    ("too_many", {"seconds": 7}, "server answered 429"),
    ("refuse", {}, "cannot reach the server"),
])
def test_passing_failures_are_retry_later_with_the_servers_wait(server, tmp_path, fault, kw,
                                                                reason):
    server.faults.set(fault, **kw)
    with pytest.raises(RetryLater) as e:
        client(server).put(target(tmp_path, 1000, recording=fresh_recording()))
    assert e.value.reason.startswith(reason)
    if fault == "too_many":
        assert e.value.retry_after == 7


def test_a_stalled_server_is_a_timeout_not_a_hang(server, tmp_path):
    server.faults.set("stall", count=1, seconds=3)
    started = time.monotonic()
    with pytest.raises(RetryLater, match="did not answer in time"):
        client(server, read_timeout_s=0.5).put(target(tmp_path, 1000,
                                                      recording=fresh_recording()))
    assert time.monotonic() - started < 2


def test_different_content_at_the_same_address_is_refused_not_retried(server, tmp_path):
    recording = fresh_recording()
    client(server).put(target(tmp_path, 1000, recording=recording))
    with pytest.raises(Refused, match="409"):
        client(server).put(target(tmp_path / "..", 1000, recording=recording))


def test_the_bandwidth_cap_holds(server, tmp_path):
    t = target(tmp_path, 2_000_000, recording=fresh_recording())
    c = client(server, bandwidth_bps=500_000)
    time.sleep(1.1)  # the cap lets at most one second of credit build up
    started = time.monotonic()
    c.put(t)
    took = time.monotonic() - started
    # 2 MB at 500 kB/s is 4 s; less the second of credit and the last block (sent once paid
    # for by the wait before it): at least (2000 - 500 - 256) / 500 s.
    assert 2.4 <= took < 5, took


@pytest.mark.parametrize("url, allowed", [
    ("https://account.example", True),
    ("http://127.0.0.1:8080", True),
    ("http://[::1]:8080", True),
    ("http://localhost", True),
    ("http://192.0.2.10", False),
    ("http://account.example", False),
    ("ftp://account.example", False),
    ("account.example", False),
])
def test_plain_http_only_to_loopback_and_only_in_simulation(url, allowed):
    def make(sim: bool):
        return UploadClient(UploadSettings(url=url, allow_plain_http=sim))
    if url.startswith("https://"):
        make(False)
    elif allowed:
        make(True)
        with pytest.raises(ValueError, match="only in simulation"):
            make(False)
    else:
        with pytest.raises(ValueError):
            make(True)


def test_retry_after_in_seconds_or_as_a_date():
    assert _retry_after("12") == 12
    assert _retry_after(None) is None and _retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < _retry_after(in_a_minute) <= 60
