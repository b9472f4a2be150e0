"""The teacher's side of the upload API: list, download and delete their own recordings, with
their own certificate (mutual TLS). `classcam account ls|get|rm` speaks through this.

    account = Account("https://account.school.example", "t-evans", cert, key, ca)
    for recording in account.recordings():
        rid = recording["recording_id"]
        paths = account.download(rid, Path("lessons") / rid)
    account.delete(rid)

Every call has a timeout and fails with an AccountError whose text is one line saying why.
A downloaded file is streamed to disk, checked against the SHA-256 the server states, and only
then renamed into place: a file that is there is whole and is what the server holds.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests

from formats import ids
from formats.durable import fsync_dir

SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)

CHUNK = 256 * 1024


class AccountError(Exception):
    """A request to the account failed. str() is one line: the HTTP status and the server's
    reason, or the connection problem. `status` is None when no answer came."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Account:
    """One teacher's recordings on the account at `url` (https only)."""

    def __init__(self, url: str, teacher_id: str, cert: Path, key: Path, ca: Path | None,
                 timeout: tuple[float, float] = (10, 60)):
        """`ca` is the CA bundle the server's certificate must chain to (None: the system's);
        `timeout` is (connect, read) seconds for every request."""
        if urlsplit(url).scheme != "https":
            raise AccountError(f"the account URL must be https://, not {url!r}")
        if not ids.is_teacher_id(teacher_id):
            raise AccountError(f"malformed teacher id {teacher_id!r}")
        self.url = url.rstrip("/")
        self.teacher_id = teacher_id
        self.timeout = timeout
        # Passed on each request as well: a session's own `verify` loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = str(ca) if ca is not None else True
        self._session = requests.Session()
        self._session.cert = (str(cert), str(key))
        self._session.verify = self._verify

    def recordings(self) -> list[dict]:
        """[{"recording_id", "files": [{"name", "size", "sha256"}]}], as the server lists them."""
        response = self._request("GET", f"/v1/teachers/{self.teacher_id}/recordings")
        with response:
            _expect(response, 200)
            try:
                listing = response.json()
            except ValueError:
                raise AccountError("the account's list is not JSON") from None
        return _checked_listing(listing)

    def download(self, recording_id: str, into: Path) -> list[Path]:
        """Every file of the recording into directory `into` (made if missing), each checked
        against the server's SHA-256; returns their paths. Files already in `into` with the same
        names are replaced."""
        recording_id = _recording_id(recording_id)
        listed = next((r for r in self.recordings() if r["recording_id"] == recording_id), None)
        if listed is None:
            raise AccountError(f"404 no recording {recording_id} on the account", 404)
        into.mkdir(parents=True, exist_ok=True)
        return [self._download_file(recording_id, f, into) for f in listed["files"]]

    def delete(self, recording_id: str) -> None:
        """Delete the recording from the account (all of its files)."""
        recording_id = _recording_id(recording_id)
        path = f"/v1/teachers/{self.teacher_id}/recordings/{recording_id}"
        with self._request("DELETE", path) as response:
            _expect(response, 204)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Account:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _download_file(self, recording_id: str, listed: dict, into: Path) -> Path:
        name = listed["name"]
        path = f"/v1/teachers/{self.teacher_id}/recordings/{recording_id}/{name}"
        final = into / name   # name is an ids.FILE_NAME: it cannot leave `into`
        temp = into / f".{name}.download"
        with self._request("GET", path, stream=True) as response:
            _expect(response, 200)
            stated = response.headers.get("X-Classcam-SHA256", "").lower()
            if not SHA256.fullmatch(stated):
                raise AccountError(f"the account sent {name} without a SHA-256")
            if stated != listed["sha256"]:
                raise AccountError(f"{name}: the account lists SHA-256 {listed['sha256']} "
                                   f"but sends {stated}")
            try:
                size, got = self._receive(response, temp)
                if got != stated:
                    raise AccountError(f"{name}: received data hashes to {got}, the account says "
                                       f"{stated}; not kept")
                if size != listed["size"]:
                    raise AccountError(f"{name}: received {size} bytes, the account lists "
                                       f"{listed['size']}; not kept")
                os.replace(temp, final)
            finally:
                temp.unlink(missing_ok=True)
        fsync_dir(into)
        return final

    def _receive(self, response: requests.Response, temp: Path) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        try:
            with open(temp, "wb") as f:
                for piece in response.iter_content(CHUNK):
                    f.write(piece)
                    digest.update(piece)
                    size += len(piece)
                f.flush()
                os.fsync(f.fileno())
        except requests.RequestException as e:
            raise AccountError(f"download cut short: {_one_line(e)}") from None
        return size, digest.hexdigest()

    def _request(self, method: str, path: str, stream: bool = False) -> requests.Response:
        try:
            return self._session.request(method, self.url + path, timeout=self.timeout,
                                         verify=self._verify, stream=stream,
                                         allow_redirects=False)
        except requests.RequestException as e:
            raise AccountError(f"cannot reach {self.url}: {_one_line(e)}") from None


def _expect(response: requests.Response, status: int) -> None:
    if response.status_code == status:
        return
    try:
        reason = response.json().get("error") or ""
    except (ValueError, AttributeError, requests.RequestException):
        reason = ""
    reason = _one_line(reason) or response.reason or "unexpected answer"
    raise AccountError(f"{response.status_code} {reason}", response.status_code)


def _checked_listing(listing) -> list[dict]:
    """The list, if it has the README's shape and only names we would write to disk."""
    if not isinstance(listing, list):
        raise AccountError("the account's list is not in the expected shape")
    try:
        for recording in listing:
            _recording_id(recording["recording_id"])
            for f in recording["files"]:
                if not (ids.is_file_name(f["name"])
                        and isinstance(f["size"], int) and isinstance(f["sha256"], str)
                        and SHA256.fullmatch(f["sha256"])):
                    raise AccountError(f"the account lists a malformed file: {f!r:.80}")
        return listing
    except (TypeError, KeyError):
        raise AccountError("the account's list is not in the expected shape") from None


def _recording_id(value) -> str:
    if not ids.is_recording_id(value):
        raise AccountError(f"malformed recording id {value!r:.40}")
    return value


def _one_line(e) -> str:
    return " ".join(str(e).split())
