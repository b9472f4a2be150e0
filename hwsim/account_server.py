"""The reference account server: the upload API of README.md ("The upload API") over real HTTPS
with mutual TLS, for the simulator, the tests and a school's platform to compare against. The
contract it keeps (addresses, roles, answers) is `account_api.py`; this module is the server around
it: TLS, streaming bodies to disk, resumable uploads, and the fault switches tests use.

    pki = TestPki.create(tmp / "pki")
    server = AccountServer(tmp / "account", pki)
    server.start()                          # listening on server.url when this returns
    server.faults.set("error_500", count=3)
    server.stored("t-evans")                # {recording_id: {name: (size, sha256)}}
    server.stop()

What a caller may rely on:
- A device (certificate OU `classcam-device`) may only PUT and HEAD file addresses; a teacher (OU
  `classcam-teacher`, CN = teacher id) may only list and GET its own recordings and DELETE them.
  Anything else is a 403, decided before the server looks at what is stored (P6).
- A file is stored as `root/<teacher>/<recording>/<name>` only when its whole body has arrived and
  hashes to the declared SHA-256; it is written under a hidden name, fsynced and renamed into
  place, so no reader ever sees half a file. A stored file is never replaced: a PUT of the same
  content is a 200, of different content a 409. That is what makes a retried PUT exactly-once (P7).
- Bodies are streamed to disk and hashed on the way; memory does not grow with the file size.
- A partial (resumable) upload that no PUT has continued for `partial_ttl_s` (default 7 days) is
  deleted: a unit whose recording was discarded mid-upload never comes back for it.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any, BinaryIO
from collections.abc import Callable, Iterator

from formats import ids
from formats.durable import fsync_dir
from hwsim.account_api import Address as _Address
from hwsim.account_api import (DEVICE, TEACHER, Refusal, answer_existing, authorize, parse_address,
                               role_and_name)
from hwsim.pki import TestPki

log = logging.getLogger(__name__)

CONNECTION_TIMEOUT = 30.0   # a dead client frees its thread after this long
IO_CHUNK = 256 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read, keeping the connection
LOCK_WAIT = 5.0             # how long a PUT waits for another PUT of the same address
LINGER = 5.0                # how long to read and discard input left unread before closing
PARTIAL_TTL_S = 7 * 86400   # a partial upload nobody continued for this long is deleted

PROBE_PATH = "/v1/probe"
FAULTS = frozenset({"refuse", "error_500", "too_many", "reset_mid_body", "stall", "slow",
                    "drop_answer"})
_DEFAULT_SECONDS = {"too_many": 1.0, "stall": 5.0, "slow": 0.5}
_Hash = Any  # hashlib's hash objects have no public type


class AccountServer:
    """The account API on `host:port` (0 = any free port), storing under `root`."""

    def __init__(self, root: Path, pki: TestPki, host: str = "127.0.0.1", port: int = 0,
                 partial_ttl_s: float = PARTIAL_TTL_S):
        self.root = Path(root)
        self.host = host
        self.port = port
        self.partial_ttl_s = partial_ttl_s
        self.faults = ServerFaults(on_refuse=self._refuse)
        self.requests_log: list[dict] = []
        self.handshake_failures: list[str] = []  # why each refused TLS handshake failed
        self.probes: list[float] = []  # monotonic times of the units' HEAD /v1/probe
        self._store = _Store(self.root)
        self._tls = _server_context(pki)
        self._created: list[tuple[str, str, str]] = []
        self._created_lock = threading.Lock()
        self._listener: _Listener | None = None
        self._listen_lock = threading.Lock()
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()
        self._stopping = threading.Event()
        self._expiry: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self) -> None:
        """Listen and serve on background threads; connections are accepted once this returns."""
        self._stopping.clear()
        self._listen()
        if self._expiry is None or not self._expiry.is_alive():
            self._expiry = threading.Thread(target=self._expire_partials,
                                            name="account-server:expiry", daemon=True)
            self._expiry.start()

    def stop(self) -> None:
        """Stop listening, cut every open connection and wait (briefly) for their threads."""
        self._stopping.set()
        self.faults.clear()
        self._unlisten()
        self._abort_connections()
        deadline = time.monotonic() + 5
        while self._open_connections() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stored(self, teacher_id: str) -> dict[str, dict[str, tuple[int, str]]]:
        """{recording_id: {name: (size, sha256)}} of the teacher's complete files."""
        return {r["recording_id"]: {f["name"]: (f["size"], f["sha256"]) for f in r["files"]}
                for r in self._store.recordings(teacher_id)}

    def created(self) -> list[tuple[str, str, str]]:
        """(teacher, recording, name) each time a file was newly stored (a 201), in order. With
        the `drop_answer` fault the client may not have seen that 201."""
        with self._created_lock:
            return list(self._created)

    # -- listening, and the `refuse` fault ---------------------------------------------------

    def _listen(self) -> None:
        with self._listen_lock:
            if self._listener is not None or self._stopping.is_set():
                return
            listener = _bind_listener(self)
            self.port = listener.server_address[1]
            self._listener = listener
            threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"account-server:{self.port}", daemon=True).start()

    def _unlisten(self) -> None:
        with self._listen_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown()
            listener.server_close()

    def _refuse(self, on: bool) -> None:
        if on:
            self._unlisten()
            # An open keep-alive connection would otherwise keep "the server" reachable.
            self._abort_connections()
        else:
            self._listen()

    # -- connections ------------------------------------------------------------------------

    def _serve_connection(self, raw: socket.socket, peer: tuple, listener: _Listener) -> None:
        """Runs on the connection's own thread: the TLS handshake here cannot hold up accept()."""
        if "refuse" in self.faults.active():   # accepted just before the listener closed
            raw.close()
            return
        raw.settimeout(CONNECTION_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small answers go out at once
        try:
            tls = self._tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return
        with self._connections_lock:
            self._connections.add(tls)
        reset = linger = False
        try:
            try:
                tls.do_handshake()
            except OSError as e:  # ssl.SSLError is an OSError
                self.handshake_failures.append(f"{peer[0]}: {_one_line(e)}")
                return
            try:
                handler = _Handler(tls, peer, listener)
                reset, linger = handler.reset_connection, handler.unread_input
            except OSError:  # the client went away between requests
                pass
            if linger and not reset:
                _discard_input(tls, LINGER)
        finally:
            with self._connections_lock:
                self._connections.discard(tls)
            _close(tls, reset)

    def _abort_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for tls in connections:
            try:
                # The plain socket's shutdown: SSLSocket.shutdown would drop the TLS state under
                # the feet of the thread reading from it.
                socket.socket.shutdown(tls, socket.SHUT_RDWR)
            except OSError:
                pass

    def _open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def _record_created(self, address: _Address) -> None:
        with self._created_lock:
            self._created.append((address.teacher, address.recording, address.name))

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _expire_partials(self) -> None:
        """Delete partial uploads that nobody continued for `partial_ttl_s`, checking a few
        times per period, until the server stops."""
        period = min(max(self.partial_ttl_s / 4, 0.05), 3600.0)
        while not self._stopping.wait(period):
            try:
                self._store.expire_partials(time.time() - self.partial_ttl_s)
            except OSError:
                log.exception("account server: expiring partial uploads failed")


class ServerFaults:
    """Switches that make the server misbehave; thread-safe. Each is on until cleared, or for
    the next `count` requests it applies to.

    - `refuse`: the listening socket is closed (connection refused) and open connections are cut;
      `seconds` listens again by itself after that long. `count` is not supported.
    - `error_500`: answer 500. `too_many`: answer 429 with `Retry-After: seconds` (default 1).
    - `reset_mid_body`: read `after_bytes` of a PUT body (default half), keep what a resumable
      PUT would keep, then close the TCP connection with an RST. Only PUTs with a body count.
    - `stall`: read the request, answer nothing for `seconds` (default 5), then close.
    - `slow`: wait `seconds` (default 0.5), then answer correctly; combines with the others.
    - `drop_answer`: handle the request (a PUT is stored) but close instead of answering, as
      when an answer is lost on the way back.
    """

    def __init__(self, on_refuse: Callable[[bool], None] | None = None):
        self._on: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self._on_refuse = on_refuse
        self._refuse_timer: threading.Timer | None = None

    def set(self, name: str, count: int | None = None, seconds: float | None = None,
            after_bytes: int | None = None) -> None:
        """Turn `name` on (replacing its earlier settings)."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(FAULTS))})")
        if count is not None and (name == "refuse" or count < 1):
            raise ValueError(f"fault {name!r} cannot have count={count}")
        fault = _Fault(count, seconds if seconds is not None else _DEFAULT_SECONDS.get(name),
                       after_bytes)
        with self._lock:
            self._on[name] = fault
        if name == "refuse":
            self._cancel_refuse_timer()
            if self._on_refuse:
                self._on_refuse(True)
            if seconds is not None:
                self._refuse_timer = threading.Timer(seconds, self.clear, args=("refuse",))
                self._refuse_timer.daemon = True
                self._refuse_timer.start()

    def clear(self, name: str | None = None) -> None:
        """Turn `name` off, or every fault when `name` is None."""
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}")
        with self._lock:
            was_refusing = "refuse" in self._on and name in (None, "refuse")
            if name is None:
                self._on.clear()
            else:
                self._on.pop(name, None)
        if was_refusing:
            self._cancel_refuse_timer()
            if self._on_refuse:
                self._on_refuse(False)

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._on)

    def _plan(self, put_with_body: bool) -> _Plan:
        """What to do to one request; uses up one of each consulted fault's count."""
        with self._lock:
            delay = self._take("slow")
            for action in ("stall", "error_500", "too_many", "reset_mid_body", "drop_answer"):
                if action == "reset_mid_body" and not put_with_body:
                    continue
                fault = self._on.get(action)
                if fault is not None:
                    self._take(action)
                    return _Plan(delay.seconds if delay else 0.0, action, fault.seconds,
                                 fault.after_bytes)
            return _Plan(delay.seconds if delay else 0.0)

    def _take(self, name: str) -> _Fault | None:
        fault = self._on.get(name)
        if fault is not None and fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                del self._on[name]
        return fault

    def _cancel_refuse_timer(self) -> None:
        timer, self._refuse_timer = self._refuse_timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()


@dataclass
class _Fault:
    count: int | None
    seconds: float | None
    after_bytes: int | None


@dataclass(frozen=True)
class _Plan:
    delay: float
    action: str | None = None
    seconds: float | None = None
    after_bytes: int | None = None


# -- the HTTP side ---------------------------------------------------------------------------

class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, account: AccountServer):
        self.account = account
        if ":" in account.host:
            self.address_family = socket.AF_INET6
        super().__init__((account.host, account.port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup of the host; nothing here needs it.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address) -> None:
        self.account._serve_connection(request, client_address, self)

    def handle_error(self, request, client_address) -> None:
        log.exception("account server: connection from %s failed", client_address[0])


def _bind_listener(account: AccountServer) -> _Listener:
    for attempt in range(50):
        try:
            return _Listener(account)
        except OSError as e:
            # Listening again on the same port after `refuse` can race the old socket's release.
            if e.errno != errno.EADDRINUSE or account.port == 0 or attempt == 49:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


class _ClientGone(Exception):
    """The connection ended or timed out before the whole body arrived."""


class _ResetByFault(Exception):
    """The `reset_mid_body` fault fired: stop reading and reset the connection."""


class _Body:
    """A request body of exactly `length` bytes, read in pieces as it arrives."""

    def __init__(self, rfile: BinaryIO, length: int | None):
        self.rfile = rfile
        self.length = length
        self.left = length or 0
        self.received = 0
        self.cut_after: int | None = None

    def pieces(self) -> Iterator[bytes]:
        """Yield the body; _ClientGone if it ends early, _ResetByFault at `cut_after` bytes."""
        while self.left:
            n = min(IO_CHUNK, self.left)
            if self.cut_after is not None:
                n = min(n, self.cut_after - self.received)
                if n <= 0:
                    raise _ResetByFault()
            try:
                data = self.rfile.read1(n)
            except OSError as e:
                raise _ClientGone(_one_line(e)) from None
            if not data:
                raise _ClientGone("connection closed in the middle of the body")
            self.left -= len(data)
            self.received += len(data)
            yield data

    def drain(self) -> None:
        for _ in self.pieces():
            pass


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (keep-alive), each answered with JSON or a file."""

    protocol_version = "HTTP/1.1"
    server: _Listener
    reset_connection = False   # read by the connection thread after the handler returns
    unread_input = False       # closing with a body still arriving: read it away first
    _body: _Body | None = None
    _record: dict | None = None
    _drop_answer = False
    _answered = False

    def setup(self) -> None:
        super().setup()
        self.role, self.cn = role_and_name(self.connection.getpeercert())
        self.account = self.server.account

    def handle_one_request(self) -> None:
        self._record, self._body, self._drop_answer, self._answered = None, None, False, False
        super().handle_one_request()

    def _serve(self) -> None:
        # The target as sent: http.server rewrites a leading "//" in self.path.
        words = self.requestline.split()
        target = words[1] if len(words) == 3 else self.path
        if self.command == "HEAD" and target == PROBE_PATH:
            # The health clock's probe: not in requests_log, and only `refuse` (the listener
            # gone) applies to it; the other switches are for the uploads a test watches.
            self.account.probes.append(time.monotonic())
            self._send_json(204 if self.role == DEVICE else 403, None)
            return
        self._record = {"t": time.monotonic(), "method": self.command, "path": target,
                        "role": self.role, "cn": self.cn, "status": None, "bytes": 0}
        try:
            self._body = _Body(self.rfile, self._content_length())
            plan = self.account.faults._plan(self.command == "PUT" and self._body.left > 0)
            self._apply_faults(plan)
            if not self._answered and not self.reset_connection:
                address = parse_address(target)
                authorize(self.command, address, self.role, self.cn)
                self._route(address)
        except Refusal as r:
            self._send_json(r.status, {"error": r.reason, **r.fields}, r.headers)
        except _ClientGone as e:
            self._record["error"] = f"client gone: {e}"
            self.close_connection = True
        except _ResetByFault:
            self._record["fault"] = "reset_mid_body"
            self.reset_connection = self.close_connection = True
        except Exception:
            log.exception("account server: %s %s failed", self.command, self.path)
            if self._answered:
                self.close_connection = True
            else:
                self._send_json(500, {"error": "internal error"})
        finally:
            if self._body is not None:
                self._record["bytes"] = self._body.received
            self.account.requests_log.append(self._record)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = do_PATCH = do_OPTIONS = _serve

    def _apply_faults(self, plan: _Plan) -> None:
        if plan.delay:
            self.account._pause(plan.delay)
        if plan.action:
            self._record["fault"] = plan.action
        if plan.action == "stall":
            try:
                self._body.drain()
            except _ClientGone:
                pass
            self.account._pause(plan.seconds or 0)
            self._answered = self.close_connection = True   # nothing is ever sent
        elif plan.action == "error_500":
            raise Refusal(500, "simulated server error")
        elif plan.action == "too_many":
            seconds = plan.seconds if plan.seconds is not None else 1
            raise Refusal(429, "simulated overload", {"Retry-After": str(max(0, round(seconds)))})
        elif plan.action == "reset_mid_body":
            after = plan.after_bytes if plan.after_bytes is not None else self._body.left // 2
            self._body.cut_after = max(0, after)
        elif plan.action == "drop_answer":
            self._drop_answer = True

    def _route(self, address: _Address) -> None:
        if self.command == "PUT":
            self._put(address)
        elif self.command == "HEAD":
            self._head(address)
        elif self.command == "DELETE":
            if not self.account._store.delete(address.teacher, address.recording):
                raise Refusal(404, "no such recording")
            self._send_json(204, None)
        elif address.kind == "list":
            self._send_json(200, self.account._store.recordings(address.teacher))
        else:
            self._send_file(address)

    # -- PUT and HEAD (the device) --

    def _put(self, address: _Address) -> None:
        sha = self._header("X-Classcam-SHA256", required=True).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise Refusal(400, "X-Classcam-SHA256 must be 64 hex digits")
        size = _decimal(self._header("X-Classcam-Size", required=True), "X-Classcam-Size")
        length = self._body.length
        if length is None:
            raise Refusal(411, "PUT needs a Content-Length")
        span = self._content_range(length, size)
        if span is None and length != size:
            raise Refusal(422, f"the body has {length} bytes, X-Classcam-Size says {size}")
        store = self.account._store
        with store.locked(address):
            stored = store.complete(address)
            if stored is not None:
                self._body.drain()  # all of it, however large: the client must see this answer
                status, answer = answer_existing(stored, sha, size)
            elif span is None:
                status, answer = self._put_whole(address, sha, size)
            else:
                status, answer = self._put_part(address, sha, size, span)
        self._send_json(status, answer)

    def _put_whole(self, address: _Address, sha: str, size: int) -> tuple[int, dict]:
        store = self.account._store
        temp = store.upload_temp(address)
        digest = hashlib.sha256()
        try:
            with open(temp, "wb") as f:
                for piece in self._body.pieces():
                    _write(f, piece)
                    digest.update(piece)
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != sha:
                raise Refusal(422, f"the body's SHA-256 is {digest.hexdigest()}, "
                                   f"X-Classcam-SHA256 says {sha}; nothing stored")
            store.commit(address, temp, sha)
        finally:
            temp.unlink(missing_ok=True)  # a no-op once committed: the name has moved
        self.account._record_created(address)
        return 201, {"sha256": sha, "size": size}

    def _put_part(self, address: _Address, sha: str, size: int,
                  span: tuple[int, int, int]) -> tuple[int, dict]:
        start, end, total = span
        store = self.account._store
        partial = store.partial(address)
        if partial is not None and (partial.sha, partial.size) != (sha, size):
            if start != 0:
                raise Refusal(416, "a different file was being uploaded here; start again at 0",
                              offset=0)
            store.discard_partial(partial.path)
            partial = None
        offset = partial.offset if partial else 0
        if start != offset:
            raise Refusal(416, f"this upload continues at byte {offset}", offset=offset)
        path = partial.path if partial else store.new_partial(address, sha, size)
        digest = store.append_partial(path, self._body.pieces(), durable=True)
        if end + 1 < total:
            return 202, {"offset": end + 1}
        if digest != sha:
            store.discard_partial(path)
            raise Refusal(422, f"the file's SHA-256 is {digest}, X-Classcam-SHA256 says {sha}; "
                               "nothing stored")
        store.commit(address, path, sha)
        self.account._record_created(address)
        return 201, {"sha256": sha, "size": size}

    def _head(self, address: _Address) -> None:
        store = self.account._store
        stored = store.complete(address)
        if stored is not None:
            self._send_json(200, None, {"X-Classcam-SHA256": stored[1],
                                        "X-Classcam-Size": str(stored[0])})
            return
        partial = store.partial(address)
        if partial is None:
            raise Refusal(404, "nothing of this file has arrived")
        self._send_json(200, None, {"X-Classcam-Offset": str(partial.offset)})

    def _content_range(self, length: int, size: int) -> tuple[int, int, int] | None:
        value = self._header("Content-Range")
        if value is None:
            return None
        m = re.fullmatch(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})", value.strip())
        if not m:
            raise Refusal(400, "Content-Range must be 'bytes START-END/TOTAL'")
        start, end, total = (int(g) for g in m.groups())
        if not start <= end < total or end - start + 1 != length:
            raise Refusal(400, "Content-Range does not match the body's length")
        if total != size:
            raise Refusal(400, "Content-Range total differs from X-Classcam-Size")
        return start, end, total

    # -- GET (the teacher) --

    def _send_file(self, address: _Address) -> None:
        try:
            f = open(self.account._store.file_path(address), "rb")
        except FileNotFoundError:
            raise Refusal(404, "no such file") from None
        with f:
            size, sha = self.account._store.digest_of(f)
            if not self._start_answer(200, {"Content-Type": "application/octet-stream",
                                            "Content-Length": str(size),
                                            "X-Classcam-SHA256": sha,
                                            "X-Classcam-Size": str(size)}):
                return
            sent = 0
            while (piece := f.read(IO_CHUNK)) and self._write_out(piece):
                sent += len(piece)
            self._record["sent"] = sent

    # -- answers --

    def _send_json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        fields = dict(headers or {})
        if status != 204:
            fields["Content-Length"] = str(len(data))
            if data:
                fields["Content-Type"] = "application/json"
        self._start_answer(status, fields, b"" if self.command == "HEAD" else data)

    def _start_answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> bool:
        """Send the status line, headers and a small `body`; False when nothing could be sent
        (faults, a client that went away)."""
        if self._answered or self.reset_connection:
            return False
        if not self._settle_body():
            return False
        self._answered = True
        if self._record is not None:
            self._record["status"] = int(status)
        if self._drop_answer:
            self._record["fault"] = "drop_answer"
            self.close_connection = True
            return False
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # One write for headers and body. (HTTP/0.9 has no headers: http.server keeps no buffer.)
        buffered = getattr(self, "_headers_buffer", [])
        data, self._headers_buffer = b"".join(buffered) + b"\r\n" + body, []
        return self._write_out(data)

    def _write_out(self, data: bytes) -> bool:
        """Send `data`; False (and the connection is closed) if the client has gone."""
        try:
            if data:
                self.wfile.write(data)
            return True
        except OSError as e:
            self._record["error"] = f"client gone: {_one_line(e)}"
            self.close_connection = True
            return False

    def _settle_body(self) -> bool:
        """Read what is left of the request body, so the next request on this connection starts
        in the right place and the client, still sending, sees the answer. Too large: close."""
        body = self._body
        if body is None or not body.left:
            return True
        if body.left > DRAIN_LIMIT:
            self.close_connection = self.unread_input = True
            return True
        try:
            body.drain()
        except _ClientGone:
            self.close_connection = True
            return False
        except _ResetByFault:
            self._record["fault"] = "reset_mid_body"
            self.reset_connection = self.close_connection = True
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method), as JSON."""
        self.close_connection = True
        if self._record is None:
            self._record = {"method": self.command, "path": getattr(self, "path", None),
                            "role": self.role, "cn": self.cn, "status": None, "bytes": 0}
            self.account.requests_log.append(self._record)
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format: str, *args) -> None:
        log.debug("account server: %s " + format, self.address_string(), *args)

    # -- request headers --

    def _header(self, name: str, required: bool = False) -> str | None:
        values = self.headers.get_all(name) or []
        if len(values) > 1:
            raise Refusal(400, f"{name} given more than once")
        if not values and required:
            raise Refusal(400, f"{name} is required")
        return values[0] if values else None

    def _content_length(self) -> int | None:
        if self.headers.get("Transfer-Encoding") is not None:
            # Without a length this body has no end we can find: answer, then close.
            self.close_connection = self.unread_input = True
            raise Refusal(411, "send a Content-Length; chunked bodies are not accepted")
        values = self.headers.get_all("Content-Length") or []
        if len(set(values)) > 1 or (values and not re.fullmatch(r"[0-9]{1,19}", values[0])):
            self.close_connection = self.unread_input = True
            raise Refusal(400, "malformed Content-Length")
        return int(values[0]) if values else None


# -- storage -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Partial:
    path: Path
    sha: str
    size: int
    offset: int


class _Store:
    """Files under `root/<teacher>/<recording>/<name>`; partial uploads beside them under hidden
    names that carry the declared hash and size (`.<name>.<sha>.<size>.partial`)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[tuple, list] = {}        # address -> [lock, users]
        self._locks_guard = threading.Lock()
        self._digests: dict[tuple, str] = {}       # (dev, inode, size, mtime) -> sha256
        self._resume: dict[Path, tuple[int, _Hash]] = {}  # partial -> (offset, running hash)
        for stale in root.glob("*/*/.*.upload"):   # whole-file PUTs cut short by a restart
            stale.unlink(missing_ok=True)

    def file_path(self, a: _Address) -> Path:
        path = self.root / a.teacher / a.recording / a.name
        # parse_address already makes escaping impossible; this keeps it so if that changes.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise Refusal(400, "address outside the store")
        return path

    @contextmanager
    def locked(self, a: _Address) -> Iterator[None]:
        """Hold the address's lock: two PUTs of one file never interleave."""
        with self._address_lock(a, LOCK_WAIT) as held:
            if not held:
                raise Refusal(429, "another upload of this file is in progress",
                              {"Retry-After": "1"})
            yield

    @contextmanager
    def locked_if_free(self, a: _Address) -> Iterator[bool]:
        """Hold the address's lock if nobody holds it now; yields whether it does."""
        with self._address_lock(a, 0) as held:
            yield held

    @contextmanager
    def _address_lock(self, a: _Address, wait_s: float) -> Iterator[bool]:
        key = (a.teacher, a.recording, a.name)
        with self._locks_guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            held = entry[0].acquire(timeout=wait_s)
            try:
                yield held
            finally:
                if held:
                    entry[0].release()
        finally:
            with self._locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def complete(self, a: _Address) -> tuple[int, str] | None:
        """(size, sha256) of the stored file, or None."""
        try:
            with open(self.file_path(a), "rb") as f:
                return self.digest_of(f)
        except FileNotFoundError:
            return None

    def digest_of(self, f: BinaryIO) -> tuple[int, str]:
        """(size, sha256) of an open stored file, hashed once and then cached. Stored files are
        never rewritten, so the inode and mtime identify the content."""
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        sha = self._digests.get(key)
        if sha is None:
            h = hashlib.sha256()
            while piece := f.read(IO_CHUNK):
                h.update(piece)
            f.seek(0)
            sha = self._digests[key] = h.hexdigest()
        return st.st_size, sha

    def partial(self, a: _Address) -> _Partial | None:
        """The resumable upload in progress at `a`, if any (the newest, if there are several)."""
        found = []
        for path in self.file_path(a).parent.glob(f".{a.name}.*.partial"):
            m = re.fullmatch(rf"\.{re.escape(a.name)}\.([0-9a-f]{{64}})\.([0-9]+)\.partial",
                             path.name)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if m:
                found.append((st.st_mtime_ns, _Partial(path, m[1], int(m[2]), st.st_size)))
        return max(found, key=lambda t: t[0])[1] if found else None

    def new_partial(self, a: _Address, sha: str, size: int) -> Path:
        path = self.file_path(a).with_name(f".{a.name}.{sha}.{size}.partial")
        self._ensure_dir(path.parent)
        path.touch()
        self._resume[path] = (0, hashlib.sha256())
        return path

    def append_partial(self, path: Path, pieces: Iterator[bytes], durable: bool) -> str:
        """Append `pieces` to a partial, hashing as it goes; returns the hash of the whole partial.
        Whatever arrived before the body was cut short stays, ready to resume."""
        offset, digest = self._resume_state(path)
        self._resume.pop(path, None)  # until it is consistent again
        with open(path, "r+b") as f:
            f.seek(offset)
            f.truncate()   # bytes past what was hashed cannot be trusted
            try:
                for piece in pieces:
                    _write(f, piece)
                    digest.update(piece)
                    offset += len(piece)
            except (_ClientGone, _ResetByFault):
                f.flush()
                self._resume[path] = (offset, digest)
                raise
            f.flush()
            if durable:
                os.fsync(f.fileno())
        self._resume[path] = (offset, digest)
        return digest.copy().hexdigest()

    def discard_partial(self, path: Path) -> None:
        self._resume.pop(path, None)
        path.unlink(missing_ok=True)

    def expire_partials(self, older_than: float) -> list[Path]:
        """Delete every partial upload last written before `older_than` (a wall-clock time)
        that no PUT is appending to now, and its recording's directory if nothing else is in
        it; returns the partials deleted."""
        expired = []
        for path in self.root.glob("*/*/.*.partial"):
            m = re.fullmatch(r"\.(.+)\.[0-9a-f]{64}\.[0-9]+\.partial", path.name)
            if not m or not ids.is_file_name(m[1]):
                continue
            address = _Address(path.parent.parent.name, path.parent.name, m[1])
            with self.locked_if_free(address) as free:
                try:
                    if not free or path.stat().st_mtime >= older_than:
                        continue
                except FileNotFoundError:
                    continue
                self.discard_partial(path)
                expired.append(path)
            try:
                path.parent.rmdir()  # only if empty: a recording of nothing but this partial
            except OSError:
                pass
        return expired

    def upload_temp(self, a: _Address) -> Path:
        path = self.file_path(a)
        self._ensure_dir(path.parent)
        return path.with_name(f".{a.name}.{secrets.token_hex(8)}.upload")

    def commit(self, a: _Address, source: Path, sha: str) -> None:
        """Rename a complete, verified, fsynced file into place (the caller holds the lock and has
        checked nothing is stored there), then drop any partial upload of it."""
        final = self.file_path(a)
        os.rename(source, final)
        fsync_dir(final.parent)
        with open(final, "rb") as f:
            st = os.fstat(f.fileno())
            self._digests[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = sha
        self._resume.pop(source, None)
        for stale in final.parent.glob(f".{a.name}.*.partial"):
            self.discard_partial(stale)

    def recordings(self, teacher: str) -> list[dict]:
        """The README's list: recordings with at least one complete file, complete files only."""
        out = []
        for rdir in _listdir(self.root / teacher):
            if not ids.is_recording_id(rdir.name):
                continue
            files = []
            for path in _listdir(rdir):
                if not ids.is_file_name(path.name):
                    continue
                try:
                    with open(path, "rb") as f:
                        size, sha = self.digest_of(f)
                except FileNotFoundError:  # deleted while we looked
                    continue
                files.append({"name": path.name, "size": size, "sha256": sha})
            if files:
                out.append({"recording_id": rdir.name, "files": files})
        return out

    def delete(self, teacher: str, recording: str) -> bool:
        """Remove a recording and any partial uploads in it; False if there was none."""
        directory = self.root / teacher / recording
        trash = self.root / teacher / f".deleted-{recording}-{secrets.token_hex(4)}"
        try:
            # One rename takes the whole recording out of sight at once.
            os.rename(directory, trash)
        except FileNotFoundError:
            return False
        fsync_dir(trash.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _resume_state(self, path: Path) -> tuple[int, _Hash]:
        size = path.stat().st_size
        cached = self._resume.get(path)
        if cached is not None and cached[0] == size:
            return cached
        h = hashlib.sha256()   # not remembered (e.g. after a restart): hash what is there
        with open(path, "rb") as f:
            while piece := f.read(IO_CHUNK):
                h.update(piece)
        return size, h

    def _ensure_dir(self, directory: Path) -> None:
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        if not missing:
            return
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in missing:   # each new directory's entry must survive a power cut too
            fsync_dir(d.parent)


# -- small helpers -----------------------------------------------------------------------------

def _server_context(pki: TestPki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca_cert)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    return context


def _decimal(value: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", value.strip()):
        raise Refusal(400, f"{name} must be a decimal number")
    return int(value)


def _write(f: BinaryIO, piece: bytes) -> None:
    try:
        f.write(piece)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise Refusal(507, "the account's storage is full") from None
        raise


def _listdir(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _discard_input(tls: ssl.SSLSocket, seconds: float) -> None:
    """Read and drop what the client still sends, until it closes or `seconds` pass. Closing
    with unread input would send an RST that can destroy our answer before the client reads it."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            tls.settimeout(left)
            if not tls.recv(IO_CHUNK):
                return
    except OSError:
        pass


def _close(tls: ssl.SSLSocket, reset: bool) -> None:
    try:
        if reset:
            # Linger 0: close() sends an RST, as when a network path or a middlebox drops.
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tls.close()
    except OSError:
        pass


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- for a person: python -m hwsim.account_server ----------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwsim.account_server",
        description="Run the reference account server (HTTPS, mutual TLS) until Ctrl-C.")
    parser.add_argument("--root", type=Path, required=True, help="where recordings are stored")
    parser.add_argument("--pki", type=Path, required=True,
                        help="test CA directory; a new CA is made there if it is empty")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 = any free port")
    parser.add_argument("--partial-ttl", type=float, default=PARTIAL_TTL_S, metavar="SECONDS",
                        help="delete a partial upload nobody continued for this long")
    parser.add_argument("--device", action="append", default=[], metavar="ID",
                        help="issue a device certificate for ID (if not there yet)")
    parser.add_argument("--teacher", action="append", default=[], metavar="ID",
                        help="issue a teacher certificate for ID (if not there yet)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if (args.pki / "ca.pem").exists():
        pki = TestPki(args.pki)
    elif args.pki.exists() and any(args.pki.iterdir()):
        print(f"{args.pki} is not empty and holds no ca.pem: not a test PKI", file=sys.stderr)
        return 2
    else:
        pki = TestPki.create(args.pki)
        print(f"created a test CA in {args.pki}", flush=True)
    for idents, role in ((args.device, DEVICE), (args.teacher, TEACHER)):
        for ident in idents:
            if not (args.pki / f"{role}-{ident}.pem").exists():
                pki.issue(ident, role)

    server = AccountServer(args.root, pki, args.host, args.port, args.partial_ttl)
    server.start()
    print(f"account server: {server.url}  (CA {pki.ca_cert}, storing under {args.root})",
          flush=True)
    for cert in sorted(args.pki.glob("classcam-*.pem")):
        print(f"  client certificate: {cert}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
