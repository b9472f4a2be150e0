"""The upload client: one file to the teacher's account, as the README's upload API says.

    client = UploadClient(UploadSettings(url="https://account.example", client_cert=..., ...))
    stored = client.put(UploadTarget(teacher_id, recording_id, name, path, sha256, size),
                        progress=heartbeat, cancel=discarded)
    # stored.sha256 is what the server kept; the caller deletes its copy only if it is its own

Every call has a connect and a read timeout. Bodies are streamed from the file, never read whole
into memory, at most `bandwidth_bps` fast; `progress()` is called whenever bytes have moved (the
watchdog's sign of life), so a slow upload is not mistaken for a hung one. A file larger than
`chunk_bytes` is sent in ranges and resumes where the server says it got to. The outcome of a call
is one of: `Stored`; `RetryLater` (the network, a timeout, 5xx, 429: try again, after
`retry_after` if the server said); `Refused` (a 4xx that says the request itself is wrong, or a
redirect: retrying it as it is will not help); `Gone` (the file was deleted here meanwhile, or
`cancel` was set: the teacher discarded its recording, and the body was cut off before its end).
Redirects are never followed: the file and the unit's certificate go to the configured server
or nowhere, and only that server's answer can count as "stored" (P6, P7).
Retrying is the caller's business (`uploader.worker`), so this module makes exactly one attempt.
"""
from __future__ import annotations

import email.utils
import ipaddress
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (ClosedPoolError, HTTPError, MaxRetryError, NewConnectionError,
                                ProtocolError, ProxyError, SSLError)
from urllib3.exceptions import TimeoutError as Urllib3Timeout

BLOCK = 256 * 1024  # bytes per socket write: small blocks cost Python calls, big ones memory
# The longest answer read: the server's answers are a few hundred bytes of JSON, and a server
# that sends more (a lie, or a mistake) must not fill the memory of a unit that may be recording.
MAX_ANSWER = 64 * 1024


class UploadError(Exception):
    """Why one attempt did not store the file."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RetryLater(UploadError):
    """A passing failure: the network, a timeout, the server busy or failing."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class Refused(UploadError):
    """The server says this request is wrong (a 4xx), or sends it elsewhere (a 3xx, never
    followed); sending it again unchanged will not help."""


class Gone(UploadError):
    """The file is no longer on the unit, or the caller cancelled the send (the teacher
    discarded its recording)."""


@dataclass(frozen=True)
class Stored:
    """What the server says it holds at the file's address."""

    sha256: str
    size: int


@dataclass(frozen=True)
class UploadTarget:
    """One sealed file and where it goes."""

    teacher_id: str
    recording_id: str
    name: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class UploadSettings:
    url: str
    ca_bundle: Path | None = None        # None: the system's CAs
    client_cert: Path | None = None      # the device's own certificate (mutual TLS)
    client_key: Path | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    chunk_bytes: int = 16 * 1024 * 1024
    bandwidth_bps: int = 0               # 0: no cap
    allow_plain_http: bool = False       # only the simulator sets this, and only for loopback


class UploadClient:
    """Sends sealed files to the account server. One attempt per `put`."""

    def __init__(self, settings: UploadSettings):
        _check_url(settings)
        self._s = settings
        self._base = settings.url.rstrip("/")
        # One pool per host (only the configured one is ever asked), its connections kept alive
        # across puts. Without a `ca_bundle`, the CAs requests trusted by default (certifi's).
        # Retries belong to the worker (with backoff that honours Retry-After); here, none.
        self._pool = urllib3.PoolManager(
            num_pools=1, blocksize=BLOCK, retries=False,
            timeout=urllib3.Timeout(connect=settings.connect_timeout_s,
                                    read=settings.read_timeout_s),
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(settings.ca_bundle) if settings.ca_bundle else certifi.where(),
            cert_file=str(settings.client_cert) if settings.client_cert else None,
            key_file=str(settings.client_key) if settings.client_key else None)
        self._pace = _Pacer(settings.bandwidth_bps)

    def close(self) -> None:
        self._pool.clear()

    def put(self, target: UploadTarget, progress: Callable[[], None] = lambda: None,
            cancel: threading.Event | None = None) -> Stored:
        """Send `target` (resuming a ranged upload where the server got to); returns what the
        server stored, or raises `RetryLater` / `Refused` / `Gone`. `progress()` is called each
        time bytes have moved; once `cancel` is set, no further byte of the file is sent."""
        sending = _Sending(progress, cancel)
        url = self._address(target)
        headers = {"X-Classcam-SHA256": target.sha256, "X-Classcam-Size": str(target.size)}
        if target.size <= self._s.chunk_bytes:
            return self._stored(self._request(sending, "PUT", url, target, 0, target.size,
                                              headers))
        offset = self._resume_offset(sending, url)
        if isinstance(offset, Stored):
            return offset
        while True:
            end = min(offset + self._s.chunk_bytes, target.size)
            ranged = dict(headers, **{"Content-Range": f"bytes {offset}-{end - 1}/{target.size}"})
            response = self._request(sending, "PUT", url, target, offset, end - offset, ranged)
            if response.status in (202, 416):  # 416: the server is elsewhere; go there
                offset = self._offset(response, target.size)
                continue
            return self._stored(response)

    def probe(self) -> None:
        """One HEAD of `/v1/probe` (README, "The upload API"): returns if the server answered
        over mutual TLS with anything below 500, else raises `RetryLater`. The health clock
        calls it whether or not anything waits, so reachability is known on that clock alone."""
        self._request(_Sending(lambda: None, None), "HEAD", f"{self._base}/v1/probe",
                      answers=frozenset(range(400, 500)) - {408, 429})

    # -- one request ------------------------------------------------------------------------

    def _request(self, sending: _Sending, method: str, url: str,
                 target: UploadTarget | None = None, offset: int = 0, length: int = 0,
                 headers: dict[str, str] | None = None,
                 answers: frozenset[int] = frozenset({416})) -> _Answer:
        """One request; a 4xx not in `answers`, or any 3xx, is `Refused`; a 5xx, 408 or 429
        `RetryLater`."""
        try:
            sending.check()
            if target is None:
                response = self._send(method, url, None, headers or {})
            else:
                try:
                    f = open(target.path, "rb")
                except FileNotFoundError:  # only the segment's own file means it is gone
                    raise Gone(f"{target.name} is no longer on the unit") from None
                with f:
                    f.seek(offset)
                    body = _FileSlice(f, length, self._pace, sending)
                    # An explicit Content-Length: urllib3 would send a file-like body chunked.
                    response = self._send(method, url, body,
                                          dict(headers or {}, **{"Content-Length": str(length)}))
        except _Cancelled:
            raise Gone("the send was cancelled") from None
        except HTTPError as e:
            raise RetryLater(_failure(e)) from None
        except OSError as e:  # reading the file while sending it
            raise RetryLater(f"cannot read {target.name if target else url}: {e}") from None
        sending.progress()
        if response.status in (408, 429) or response.status >= 500:
            raise RetryLater(f"server answered {response.status} {response.reason}",
                             _retry_after(response.headers.get("Retry-After")))
        if 300 <= response.status < 400:
            # Followed, a redirect would take the file (or, as a GET, its hash) and the unit's
            # certificate to another host, whose 200 would then count as "stored".
            raise Refused(f"server answered {response.status} {response.reason}: a "
                          "redirect, which the unit never follows")
        if response.status >= 400 and response.status not in answers:
            raise Refused(f"server answered {response.status} {response.reason}: "
                          f"{_error_text(response)}")
        return response

    def _send(self, method: str, url: str, body: _FileSlice | None,
              headers: dict[str, str]) -> _Answer:
        """One exchange on a kept-alive connection: no retry, no redirect followed, the
        answer read whole if it is at most `MAX_ANSWER` bytes (else `RetryLater`, and the
        connection is dropped unread). A `_Cancelled` from the body's read passes through
        urllib3 unwrapped, and urllib3 drops that connection."""
        response = self._pool.urlopen(method, url, body=body, headers=headers, redirect=False,
                                      retries=False, preload_content=False)
        try:
            data = response.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                raise RetryLater(f"server's {response.status} answer is longer than "
                                 f"{MAX_ANSWER // 1024} KiB")
        finally:
            # Read to its end, the connection has gone back to the pool (urllib3 releases it
            # then) and stays open for the next request; else this drops it, unread.
            response.close()
        return _Answer(response.status, response.reason or "", response.headers, data)

    def _resume_offset(self, sending: _Sending, url: str) -> int | Stored:
        response = self._request(sending, "HEAD", url, answers=frozenset({404}))
        if response.status == 404:  # nothing of it there yet
            return 0
        if "X-Classcam-SHA256" in response.headers:
            return Stored(response.headers["X-Classcam-SHA256"],
                          int(response.headers.get("X-Classcam-Size", "0")))
        try:
            return int(response.headers["X-Classcam-Offset"])
        except (KeyError, ValueError):
            raise RetryLater("server's HEAD answer has no offset") from None

    def _offset(self, response: _Answer, size: int) -> int:
        try:
            offset = int(_json(response)["offset"])
        except (ValueError, KeyError, TypeError):
            raise RetryLater(f"server's {response.status} answer has no offset") from None
        if not 0 <= offset < size:
            raise Refused(f"server asks for offset {offset} of a {size}-byte file")
        return offset

    def _stored(self, response: _Answer) -> Stored:
        if response.status not in (200, 201):
            raise RetryLater(f"unexpected answer {response.status} {response.reason}")
        try:
            answer = _json(response)
            return Stored(str(answer["sha256"]), int(answer["size"]))
        except (ValueError, KeyError, TypeError):
            raise RetryLater("server's answer has no sha256") from None

    def _address(self, t: UploadTarget) -> str:
        return (f"{self._base}/v1/teachers/{quote(t.teacher_id, safe='')}/recordings/"
                f"{quote(t.recording_id, safe='')}/{quote(t.name, safe='')}")


class _Cancelled(Exception):
    """The caller cancelled the send. Deliberately not an OSError: urllib3 passes it through
    unwrapped (and closes the connection), so the body ends short and the server stores
    nothing of a whole-file PUT."""


class _Sending:
    """One `put`: the caller's sign-of-life callback and cancel switch."""

    def __init__(self, progress: Callable[[], None], cancel: threading.Event | None):
        self.progress = progress
        self._cancel = cancel

    def check(self) -> None:
        """Raise `_Cancelled` once the caller has cancelled."""
        if self._cancel is not None and self._cancel.is_set():
            raise _Cancelled()


class _FileSlice:
    """`length` bytes of an open file, read in blocks as the body is sent, at most as fast as
    the pacer allows; `progress()` after each block, so the sign of life keeps going exactly
    while bytes move. Cancelling stops it before the next block."""

    def __init__(self, f: BinaryIO, length: int, pace: _Pacer, sending: _Sending):
        self._f = f
        self._left = length
        self._pace = pace
        self._sending = sending

    def __len__(self) -> int:
        return self._left

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        n = self._pace.portion(n)
        self._sending.check()
        self._pace.wait(n)
        self._sending.check()
        data = self._f.read(n)
        self._left -= len(data)
        if not data and self._left > 0:
            raise OSError("the file shrank while it was being sent")
        self._sending.progress()
        return data


class _Pacer:
    """A bandwidth cap: blocks long enough that the bytes sent so far stay under the rate."""

    STEP_S = 0.25  # the longest one wait: a capped upload still shows a sign of life this often

    def __init__(self, bytes_per_second: int):
        self._rate = bytes_per_second
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def portion(self, n: int) -> int:
        """How much of `n` bytes to send in one go: no more than `STEP_S` worth of the cap."""
        if self._rate <= 0:
            return n
        return max(1, min(n, int(self._rate * self.STEP_S)))

    def wait(self, n: int) -> None:
        if self._rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - 1.0)  # no saving up more than a second of credit
            self._next = start + n / self._rate
            delay = start - now
        if delay > 0:
            time.sleep(delay)


def _check_url(s: UploadSettings) -> None:
    parts = urlsplit(s.url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        if s.allow_plain_http and _is_loopback(parts.hostname):
            return
        raise ValueError("upload.url: plain HTTP is allowed only to a loopback address, and only "
                         "in simulation")
    raise ValueError(f"upload.url: {s.url!r} is not an https:// address")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class _Answer:
    """A server's answer, read whole (it is at most `MAX_ANSWER` bytes)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    data: bytes


def _json(response: _Answer) -> Any:
    """The answer's body as JSON; `ValueError` (json's own, or a bad encoding) if it is not."""
    return json.loads(response.data)


def _error_text(response: _Answer) -> str:
    try:
        answer = _json(response)
        return str(answer.get("error", "") if isinstance(answer, dict) else answer)[:200]
    except ValueError:
        return response.data.decode("utf-8", "replace")[:200]


def _failure(e: HTTPError) -> str:
    """Why a request got no answer, on one line, as requests named its errors."""
    cause = e.reason if isinstance(e, MaxRetryError) and e.reason is not None else e
    if isinstance(cause, SSLError):
        return f"TLS: {_short(cause)}"
    if isinstance(cause, NewConnectionError):  # a subclass of ConnectTimeoutError, yet no timeout
        return f"cannot reach the server: {_short(cause)}"
    if isinstance(cause, Urllib3Timeout):
        return "the server did not answer in time"
    if isinstance(cause, ProtocolError | ProxyError | ClosedPoolError):
        return f"cannot reach the server: {_short(cause)}"
    return f"request failed: {_short(cause)}"


def _short(e: Exception) -> str:
    """An error's text on one short line, without the connection's repr urllib3 puts first."""
    text = re.sub(r"^<[^>]*>: ", "", str(e) or type(e).__name__)
    return text.replace("\n", " ")[:200]
