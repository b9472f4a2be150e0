"""A hostile account server that answers with a redirect (issue 13, item 2): the unit never
follows it. The file stays in the spool (held, tried again after `hold_s`), nothing counts as
stored, and the host the redirect points at never hears from the unit, let alone sees its
certificate (P6, P7).

The redirect target is a second real HTTPS server on loopback with a certificate the unit trusts,
which answers every request `200` with the file's own hash: exactly the answer that would have
emptied the spool while nothing was stored anywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyrage
import pytest

from formats.manifest import segment_file
from hwsim.pki import DEVICE, TestPki
from uploader.client import UploadClient, UploadSettings
from uploader.spool import FileState, Spool
from uploader.worker import Uploader

REDIRECTS = (301, 302, 303, 307, 308)


class _Server(ThreadingHTTPServer):
    """HTTPS on loopback with the test CA's server certificate; asks for a client certificate
    and records every connection it accepts and every request it reads."""

    daemon_threads = True

    def __init__(self, pki: TestPki, handler):
        super().__init__(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(pki.ca_cert)
        context.load_cert_chain(pki.server.cert, pki.server.key)
        self.context = context
        self.connections: list[str] = []
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def get_request(self):
        sock, peer = super().get_request()
        self.connections.append(peer[0])
        return self.context.wrap_socket(sock, server_side=True), peer

    def __enter__(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _record(self) -> None:
        cert = self.connection.getpeercert() or {}
        subject = dict(a for rdn in cert.get("subject", ()) for a in rdn)
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "sha256": self.headers.get("X-Classcam-SHA256"),
                                     "cert_cn": subject.get("commonName")})

    def log_message(self, format, *args) -> None:
        pass


class _Redirecting(_Recording):
    """Every request: `status`, to the same path on `target`."""

    status = 302
    target = ""

    def _answer(self) -> None:
        self._record()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # then answer, politely
        self.send_response(self.status)
        self.send_header("Location", f"{self.target}{self.path}")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    do_PUT = do_HEAD = do_GET = do_POST = _answer


class _Witness(_Recording):
    """Every request: 200, "stored", with the hash the request carried."""

    def _answer(self) -> None:
        self._record()
        sha = self.headers.get("X-Classcam-SHA256") or "0" * 64
        size = self.headers.get("X-Classcam-Size") or "0"
        body = json.dumps({"sha256": sha, "size": int(size)}).encode()
        self.send_response(200)
        self.send_header("X-Classcam-SHA256", sha)
        self.send_header("X-Classcam-Size", size)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_PUT = do_HEAD = do_GET = do_POST = _answer


def redirecting(pki: TestPki, status: int, target: str) -> _Server:
    handler = type("Handler", (_Redirecting,), {"status": status, "target": target})
    return _Server(pki, handler)


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("ranged", [False, True], ids=["whole", "ranged"])
@pytest.mark.parametrize("status", REDIRECTS)
def test_a_redirect_is_a_refusal_the_file_stays_and_the_other_host_never_hears_of_it(
        tmp_path, caplog, status, ranged):
    caplog.set_level(logging.INFO)
    pki = TestPki.create(tmp_path / "pki")
    device = pki.issue("unit-1", DEVICE)
    with _Server(pki, _Witness) as witness, redirecting(pki, status, witness.url) as hostile:
        data = os.urandom(40_000)
        client = UploadClient(UploadSettings(
            url=hostile.url, ca_bundle=pki.ca_cert, client_cert=device.cert,
            client_key=device.key, connect_timeout_s=1, read_timeout_s=2,
            # A ranged upload asks the server with HEAD where to resume: that too is redirected.
            chunk_bytes=16_000 if ranged else 1 << 20))
        spool = Spool(tmp_path / "spool")
        uploader = Uploader(spool, client, retry_max_s=0.2, hold_s=60)
        try:
            rec = spool.new_recording("t-evans", str(pyrage.x25519.Identity.generate()
                                                     .to_public()))
            (rec.path / segment_file(1)).write_bytes(data)
            spool.add(rec, segment_file(1), hashlib.sha256(data).hexdigest())
            uploader.start()
            wait(lambda: "redirect" in (uploader.status().failing or "")
                 or spool.backlog().files == 0 or witness.connections)

            # The hostile server got one request, and nobody else got anything.
            assert witness.connections == [] and witness.requests == []
            assert [r["method"] for r in hostile.requests] == ["HEAD" if ranged else "PUT"]
            # Kept, waiting to be tried again; never confirmed.
            assert spool.backlog().files == 1
            [file] = spool.files()
            assert file.state is FileState.SEALED
            assert (rec.path / segment_file(1)).read_bytes() == data
            assert "redirect" in uploader.status().failing
            # The worker itself writes no journal line (P9); the health tick reports its news.
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            news = uploader.take_period()
            assert news.failure is not None and f"server answered {status}" in news.failure
            assert "t-evans" not in news.failure and rec.recording_id not in news.failure
        finally:
            uploader.stop()
            client.close()
            spool.close()


def test_the_daemon_keeps_a_whole_lesson_when_its_server_redirects_elsewhere(lab):
    """End to end: the real daemon, a lesson, a server that redirects every request."""
    pki = lab.pki()
    with _Server(pki, _Witness) as witness, redirecting(pki, 302, witness.url) as hostile:
        with lab.account(url=hostile.url), lab.daemon() as unit:
            assert unit.lesson()["ok"]
            [recording] = lab.spooled()
            wait(lambda: (recording / "manifest.age").exists(), 20)
            wait(lambda: "redirect" in lab.journal(), 20)
            segments = sorted(recording.glob("seg-*.ts.age"))
            assert segments  # every sealed file is still on the unit
            assert hostile.requests and all(r["cert_cn"] == "sim-unit-1"
                                            for r in hostile.requests)
            assert witness.connections == [] and witness.requests == []
        assert lab.spooled() == [recording]
        assert sorted(recording.glob("seg-*.ts.age")) == segments
        assert (recording / "manifest.age").exists()
