"""The upload client on urllib3 alone: the daemon's process never loads requests, a body goes
with a Content-Length (never chunked) in `BLOCK`-sized reads, and a redirect is refused without
a connection to where it points."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import uploader.client
from uploader.client import (BLOCK, Refused, RetryLater, UploadClient, UploadSettings,
                             UploadTarget)

ROOT = Path(__file__).resolve().parent.parent


def test_the_upload_client_does_not_load_requests():
    out = subprocess.run(
        [sys.executable, "-c", "import uploader.client, sys; print('requests' in sys.modules)"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=60, check=True)
    assert out.stdout.strip() == "False"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request's headers and body size; answers as the server's `answer` says."""

    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server.seen.append({"method": self.command, "headers": dict(self.headers),  # type: ignore[attr-defined]
                            "body": len(body)})
        status, headers, payload = server.answer(self, body)  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_PUT = do_HEAD = _handle

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _server(answer) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.answer = answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _client(server, **settings) -> UploadClient:
    return UploadClient(UploadSettings(url=f"http://127.0.0.1:{server.server_address[1]}",
                                       allow_plain_http=True, connect_timeout_s=2,
                                       read_timeout_s=5, **settings))


def _target(tmp_path, size: int) -> UploadTarget:
    data = os.urandom(size)
    path = tmp_path / "seg-000001.ts.age"
    path.write_bytes(data)
    return UploadTarget("t-evans", "0" * 32, path.name, path, hashlib.sha256(data).hexdigest(),
                        size)


def test_the_body_goes_with_a_content_length_in_block_sized_reads(tmp_path, monkeypatch):
    size = 3 * BLOCK + 1234
    t = _target(tmp_path, size)
    reads: list[int] = []
    read = uploader.client._FileSlice.read

    def spy(self, n: int = -1) -> bytes:
        reads.append(n)
        return read(self, n)

    monkeypatch.setattr(uploader.client._FileSlice, "read", spy)

    def stored(handler, body: bytes):
        return 201, {"Content-Type": "application/json"}, json.dumps(
            {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}).encode()

    with _server(stored) as server:
        client = _client(server)
        try:
            assert client.put(t).sha256 == t.sha256
        finally:
            client.close()
    [put] = server.seen
    headers = {k.lower(): v for k, v in put["headers"].items()}
    assert headers["content-length"] == str(size) and put["body"] == size
    assert "transfer-encoding" not in headers
    assert reads and set(reads) == {BLOCK}  # urllib3's blocksize: BLOCK per socket write


@pytest.mark.parametrize("ranged", [False, True])
def test_a_redirect_elsewhere_is_refused_and_never_followed(tmp_path, ranged):
    witness = socket.create_server(("127.0.0.1", 0))
    witness.settimeout(0.5)
    elsewhere = f"http://127.0.0.1:{witness.getsockname()[1]}"

    def redirect(handler, body: bytes):
        return 307, {"Location": elsewhere + handler.path}, b"{}"

    t = _target(tmp_path, 100_000)
    try:
        with _server(redirect) as server:
            client = _client(server, chunk_bytes=(10_000 if ranged else 1_000_000))
            try:
                with pytest.raises(Refused, match="307"):
                    client.put(t)
                with pytest.raises(Refused, match="307"):
                    client.probe()
            finally:
                client.close()
        assert [r["method"] for r in server.seen] == ["HEAD" if ranged else "PUT", "HEAD"]
        with pytest.raises(TimeoutError):
            witness.accept()  # nobody ever knocked at the redirect's target
    finally:
        witness.close()


def test_an_answer_longer_than_the_limit_is_a_retry_and_is_not_read_whole(tmp_path):
    """A server whose answer is megabytes long (a lie, or a mistake) does not fill the unit's
    memory: at most `MAX_ANSWER` bytes of it are read, and the upload is tried again later."""
    t = _target(tmp_path, 10_000)
    huge = b" " * (8 * 1024 * 1024)

    def endless(handler, body: bytes):
        return 201, {"Content-Type": "application/json"}, huge

    with _server(endless) as server:
        client = _client(server)
        try:
            tracemalloc.start()
            with pytest.raises(RetryLater, match="longer than 64 KiB"):
                client.put(t)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            client.close()
    assert peak < 1024 * 1024  # the 8 MiB answer was never held


def test_a_short_answer_leaves_the_connection_for_the_next_request(tmp_path):
    t = _target(tmp_path, 10_000)
    ports: list[int] = []

    def stored(handler, body: bytes):
        ports.append(handler.client_address[1])
        return 201, {}, json.dumps({"sha256": hashlib.sha256(body).hexdigest(),
                                    "size": len(body)}).encode()

    with _server(stored) as server:
        client = _client(server)
        try:
            for _ in range(3):
                assert client.put(t).sha256 == t.sha256
        finally:
            client.close()
    assert len(ports) == 3 and len(set(ports)) == 1  # one kept-alive connection
