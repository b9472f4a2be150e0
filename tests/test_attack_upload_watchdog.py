"""The uploader's sign of life during a slow upload (issue 13, item 9): while bytes of a file
move, however slowly (a bandwidth cap, a long segment), the uploader stays alive and the daemon
keeps pinging the systemd watchdog; when nothing moves for longer than the stall window, it is
not alive, so a real hang still gets the daemon restarted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pyrage
import pytest

from formats.manifest import SegmentEntry, segment_file, sidecar_file
from hwsim.account_server import AccountServer
from hwsim.lab import RunningUnit
from hwsim.pki import DEVICE, TestPki
from uploader.client import UploadClient, UploadSettings
from uploader.spool import FileState, Spool
from uploader.worker import Uploader

WINDOW_S = 0.75  # the stall window the uploader-level tests judge by


@pytest.fixture
def setup(tmp_path):
    pki = TestPki.create(tmp_path / "pki")
    server = AccountServer(tmp_path / "account", pki)
    server.start()
    device = pki.issue("unit-1", DEVICE)
    spool = Spool(tmp_path / "spool")
    made = []

    def uploader(**settings) -> Uploader:
        client = UploadClient(UploadSettings(
            url=server.url, ca_bundle=pki.ca_cert, client_cert=device.cert,
            client_key=device.key, connect_timeout_s=1, **settings))
        made.append(Uploader(spool, client, retry_max_s=0.2, hold_s=60))
        return made[-1]

    yield server, spool, uploader
    for u in made:
        u.stop()
    spool.close()
    server.stop()


def sealed(spool: Spool, size: int):
    rec = spool.new_recording("t-evans", str(pyrage.x25519.Identity.generate().to_public()))
    data = os.urandom(size)
    (rec.path / segment_file(1)).write_bytes(data)
    entry = SegmentEntry(1, segment_file(1), hashlib.sha256(data).hexdigest(), 1.0, 0.0, 0.96)
    (rec.path / sidecar_file(1)).write_text(json.dumps(entry.to_json()))
    spool.add(rec, segment_file(1), entry.sha256)
    return rec


def wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def sending(spool: Spool) -> bool:
    return any(f.state is FileState.UPLOADING for f in spool.files())


def test_a_capped_upload_longer_than_the_stall_window_keeps_the_uploader_alive(setup):
    server, spool, make = setup
    sealed(spool, 2_000_000)
    uploader = make(read_timeout_s=3, bandwidth_bps=500_000)  # 3 s and more: 4 stall windows
    uploader.start()
    wait(lambda: sending(spool))
    began = time.monotonic()
    samples = []
    while spool.backlog().files:
        samples.append(uploader.alive(WINDOW_S))
        time.sleep(0.05)
    took = time.monotonic() - began
    assert server.stored("t-evans")  # it did go
    assert took > 3 * WINDOW_S and len(samples) > 20
    assert all(samples), f"not alive in {samples.count(False)} of {len(samples)} samples"


def test_a_server_that_stalls_with_nothing_moving_leaves_the_uploader_not_alive(setup):
    server, spool, make = setup
    sealed(spool, 2_000)
    server.faults.set("stall", count=1, seconds=30)       # takes the body, never answers
    uploader = make(read_timeout_s=4)
    uploader.start()
    wait(lambda: sending(spool))
    wait(lambda: not uploader.alive(WINDOW_S), timeout=3.5)  # before the read timeout ends it
    # The timeout then ends the attempt, the retry goes through, and it is alive again.
    wait(lambda: spool.backlog().files == 0)
    assert uploader.alive(WINDOW_S) and server.stored("t-evans")


@contextlib.contextmanager
def watchdog_pings(path):
    """A systemd notify socket at `path`; yields the monotonic times of WATCHDOG=1 pings."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    pings: list[float] = []
    done = threading.Event()

    def receive():
        while not done.is_set():
            try:
                message = sock.recv(4096)
            except OSError:
                continue
            if b"WATCHDOG=1" in message:
                pings.append(time.monotonic())

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        yield pings
    finally:
        done.set()
        thread.join(2)
        sock.close()


@contextlib.contextmanager
def daemon_under_watchdog(lab, notify_socket, watchdog_usec: int):
    """The real daemon, as systemd runs it with `WatchdogSec=`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NOTIFY_SOCKET=str(notify_socket),
               WATCHDOG_USEC=str(watchdog_usec))
    with open(lab.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "run", "--hw", "sim",
                                 "--config", str(lab.config_path)],
                                stdout=log, stderr=log, env=env)
        unit = RunningUnit(lab, proc)
        try:
            unit.connect(30)
            yield unit
        finally:
            unit.terminate()


def test_the_daemon_keeps_pinging_the_watchdog_through_an_upload_longer_than_the_window(
        lab, short_dir):
    # Stall window: 2 * (0.5 + 1.0) + 1 = 4 s. The file takes about 8 s at the cap.
    with lab.account(connect_timeout_s=0.5, read_timeout_s=1.0, bandwidth_kbps=128) as server:
        spool = Spool(lab.spool_dir)
        rec = sealed(spool, 128_000)
        spool.close()
        with watchdog_pings(short_dir / "notify.sock") as pings, \
                daemon_under_watchdog(lab, short_dir / "notify.sock", 200_000) as unit:
            unit.wait_uploaded(60)
            ended = time.monotonic()
        put = next(r for r in server.requests_log
                   if r["method"] == "PUT" and r["path"].endswith(segment_file(1)))
        assert ended - put["t"] > 6, "the upload was not slower than the stall window"
        during = [t for t in pings if put["t"] <= t <= ended]
        gaps = [b - a for a, b in zip([put["t"], *during], [*during, ended])]
        assert max(gaps) < 1.5, f"the watchdog went unpinged for {max(gaps):.1f} s mid-upload"
        assert rec.recording_id in server.stored("t-evans")
