"""The reference account server and the teacher's client, over real mutual TLS on loopback:
the README's upload API (idempotent and resumable PUT), who may do what (P6), the fault switches
the uploader's tests rely on, and memory that stays flat under a large upload."""
from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from teacher_tools.account import Account, AccountError
from hwsim.account_server import AccountServer
from hwsim import pki as test_ca   # (TestPki imported by name would look like a test class)
from hwsim.pki import DEVICE, TEACHER, Credential

RID = "0123456789abcdef" * 2
RID2 = "fedcba9876543210" * 2
SEG = "seg-000001.ts.age"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def address(teacher: str = "t-evans", recording: str = RID, name: str | None = SEG) -> str:
    path = f"/v1/teachers/{teacher}/recordings/{recording}"
    return f"{path}/{name}" if name else path


class Client:
    """A requests session with a client certificate. `verify` goes on every request: a
    session's own is overridden by REQUESTS_CA_BUNDLE when that is set."""

    def __init__(self, server: AccountServer, credential: Credential | None, ca: Path,
                 timeout: tuple[float, float] = (5, 10)):
        self.server, self.ca, self.timeout = server, str(ca), timeout
        self.session = requests.Session()
        if credential is not None:
            self.session.cert = (str(credential.cert), str(credential.key))

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("verify", self.ca)
        return self.session.request(method, self.server.url + path, **kw)

    def put(self, path: str, data: bytes, sha256: str | None = None, size: int | None = None,
            **kw) -> requests.Response:
        headers = {"X-Classcam-SHA256": sha256 or sha(data),
                   "X-Classcam-Size": str(len(data) if size is None else size)}
        return self.request("PUT", path, data=data, headers=headers, **kw)

    def put_part(self, path: str, whole: bytes, start: int, end: int, **kw) -> requests.Response:
        """Bytes start..end (inclusive) of `whole`, as one chunk of a resumable upload."""
        headers = {"X-Classcam-SHA256": sha(whole), "X-Classcam-Size": str(len(whole)),
                   "Content-Range": f"bytes {start}-{end}/{len(whole)}"}
        return self.request("PUT", path, data=whole[start:end + 1], headers=headers, **kw)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    pki = test_ca.TestPki.create(directory / "ca")
    other = test_ca.TestPki.create(directory / "other-ca")
    return SimpleNamespace(
        pki=pki, other=other,
        device=pki.issue("sim-unit-1", DEVICE),
        evans=pki.issue("t-evans", TEACHER),
        jones=pki.issue("t-jones", TEACHER),
        no_role=pki.issue("someone", "", name="no-role"),
        foreign_device=other.issue("sim-unit-1", DEVICE))


@pytest.fixture
def server(certs, tmp_path):
    running = AccountServer(tmp_path / "account", certs.pki)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def device(server, certs) -> Client:
    return Client(server, certs.device, certs.pki.ca_cert)


@pytest.fixture
def evans(server, certs) -> Client:
    return Client(server, certs.evans, certs.pki.ca_cert)


@pytest.fixture
def jones(server, certs) -> Client:
    return Client(server, certs.jones, certs.pki.ca_cert)


def files_under(directory: Path) -> list[str]:
    """Every file, hidden partials included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# -- PUT: idempotent, keyed by content ---------------------------------------------------------

def test_put_is_idempotent_and_never_replaces_what_is_stored(server, device):
    data = os.urandom(100_000)
    first = device.put(address(), data)
    assert first.status_code == 201 and first.json() == {"sha256": sha(data), "size": len(data)}
    again = device.put(address(), data)
    assert again.status_code == 200 and again.json() == {"sha256": sha(data), "size": len(data)}

    other = os.urandom(100_000)
    conflict = device.put(address(), other)
    assert conflict.status_code == 409 and conflict.json()["sha256"] == sha(data)
    assert "error" in conflict.json()
    stored_file = server.root / "t-evans" / RID / SEG
    assert stored_file.read_bytes() == data
    assert server.stored("t-evans") == {RID: {SEG: (len(data), sha(data))}}
    assert server.created() == [("t-evans", RID, SEG)]


def test_a_body_that_is_not_what_the_headers_say_stores_nothing(server, device):
    data = os.urandom(50_000)
    wrong_hash = device.put(address(), data, sha256=sha(b"something else"))
    assert wrong_hash.status_code == 422 and "error" in wrong_hash.json()
    wrong_size = device.put(address(), data, size=len(data) + 1)
    assert wrong_size.status_code == 422
    assert server.stored("t-evans") == {}
    assert files_under(server.root) == []
    assert device.request("HEAD", address()).status_code == 404
    assert server.created() == []


def test_malformed_puts_are_refused(server, device):
    data = b"x" * 1000
    no_hash = device.request("PUT", address(), data=data,
                             headers={"X-Classcam-Size": "1000"})
    assert no_hash.status_code == 400
    assert device.put(address(), data, sha256="not-hex").status_code == 400
    chunked = device.request("PUT", address(), data=iter([data]),   # no Content-Length
                             headers={"X-Classcam-SHA256": sha(data), "X-Classcam-Size": "1000"})
    assert chunked.status_code == 411
    bad_range = device.request("PUT", address(), data=data, headers={
        "X-Classcam-SHA256": sha(data), "X-Classcam-Size": "1000",
        "Content-Range": "bytes 0-10/1000"})
    assert bad_range.status_code == 400
    assert files_under(server.root) == []


def test_one_connection_carries_many_requests(server, certs):
    context = ssl.create_default_context(cafile=str(certs.pki.ca_cert))
    context.load_cert_chain(certs.device.cert, certs.device.key)
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context,
                                             timeout=5)
    body = os.urandom(100_000)
    put = {"X-Classcam-SHA256": sha(body), "X-Classcam-Size": str(len(body))}
    answers, sockets = [], set()
    for method, path in (("PUT", address()), ("PUT", address()), ("HEAD", address()),
                         ("GET", address()), ("PUT", address(teacher="T-Evans"))):
        connection.request(method, path, body=body if method == "PUT" else None,
                           headers=put if method == "PUT" else {})
        response = connection.getresponse()
        response.read()
        answers.append(response.status)
        sockets.add(id(connection.sock))
    connection.close()
    # Refused bodies are read away, so the connection stays usable after a 403 or a 400.
    assert answers == [201, 200, 200, 403, 400]
    assert len(sockets) == 1


def test_a_client_that_never_finishes_its_handshake_blocks_nobody(server, device):
    silent = socket.create_connection(("127.0.0.1", server.port))
    silent.sendall(b"\x16\x03\x01")   # the first bytes of a ClientHello, then nothing
    try:
        started = time.monotonic()
        assert device.put(address(), b"abc").status_code == 201
        assert time.monotonic() - started < 2
    finally:
        silent.close()


def test_two_puts_of_one_address_at_once_store_it_once(server, certs):
    def race(contents: list[bytes]) -> list[int]:
        barrier = threading.Barrier(len(contents))
        statuses = [0] * len(contents)

        def put(i: int) -> None:
            client = Client(server, certs.device, certs.pki.ca_cert)
            barrier.wait()
            statuses[i] = client.put(address(name=name), contents[i]).status_code

        threads = [threading.Thread(target=put, args=(i,)) for i in range(len(contents))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(statuses)

    same = os.urandom(4_000_000)
    name = "seg-000001.ts.age"
    assert race([same, same]) == [200, 201]
    name = "seg-000002.ts.age"
    a, b = os.urandom(4_000_000), os.urandom(4_000_000)
    assert race([a, b]) == [201, 409]
    stored = server.stored("t-evans")[RID]
    assert stored[name][1] in (sha(a), sha(b))
    assert (server.root / "t-evans" / RID / name).read_bytes() in (a, b)
    assert len(server.created()) == 2


# -- resumable upload --------------------------------------------------------------------------

def test_resumable_upload_in_three_chunks(server, device):
    whole = os.urandom(3_000_000)
    assert device.request("HEAD", address()).status_code == 404

    first = device.put_part(address(), whole, 0, 999_999)
    assert first.status_code == 202 and first.json() == {"offset": 1_000_000}
    head = device.request("HEAD", address())
    assert head.status_code == 200 and head.headers["X-Classcam-Offset"] == "1000000"
    assert "X-Classcam-SHA256" not in head.headers

    wrong_start = device.put_part(address(), whole, 1_500_000, 2_999_999)
    assert wrong_start.status_code == 416 and wrong_start.json()["offset"] == 1_000_000
    assert server.stored("t-evans") == {}   # a partial is not a stored file

    second = device.put_part(address(), whole, 1_000_000, 1_999_999)
    assert second.status_code == 202 and second.json() == {"offset": 2_000_000}
    last = device.put_part(address(), whole, 2_000_000, 2_999_999)
    assert last.status_code == 201 and last.json() == {"sha256": sha(whole), "size": len(whole)}

    head = device.request("HEAD", address())
    assert head.status_code == 200
    assert head.headers["X-Classcam-SHA256"] == sha(whole)
    assert head.headers["X-Classcam-Size"] == str(len(whole))
    assert (server.root / "t-evans" / RID / SEG).read_bytes() == whole
    assert files_under(server.root) == [f"t-evans/{RID}/{SEG}"]   # no partial left behind
    assert server.created() == [("t-evans", RID, SEG)]
    # A chunk sent again after completion (its answer was lost) is answered like a retry.
    assert device.put_part(address(), whole, 2_000_000, 2_999_999).status_code == 200


def test_reset_mid_body_then_resume_from_head_offset(server, device):
    whole = os.urandom(2_000_000)
    server.faults.set("reset_mid_body", count=1, after_bytes=700_000)
    with pytest.raises(requests.exceptions.ConnectionError):
        device.put_part(address(), whole, 0, len(whole) - 1)
    head = device.request("HEAD", address())
    assert head.status_code == 200
    offset = int(head.headers["X-Classcam-Offset"])
    assert offset == 700_000
    done = device.put_part(address(), whole, offset, len(whole) - 1)
    assert done.status_code == 201 and done.json()["sha256"] == sha(whole)
    assert (server.root / "t-evans" / RID / SEG).read_bytes() == whole


def test_a_resumable_upload_that_hashes_wrong_stores_nothing(server, device):
    whole = os.urandom(200_000)
    assert device.put_part(address(), whole, 0, 99_999).status_code == 202
    lie = {"X-Classcam-SHA256": sha(whole), "X-Classcam-Size": str(len(whole)),
           "Content-Range": f"bytes 100000-199999/{len(whole)}"}
    last = device.request("PUT", address(), data=os.urandom(100_000), headers=lie)
    assert last.status_code == 422
    assert device.request("HEAD", address()).status_code == 404
    assert files_under(server.root) == []


def test_a_different_file_at_the_address_restarts_the_upload(server, device):
    old, new = os.urandom(200_000), os.urandom(200_000)
    assert device.put_part(address(), old, 0, 99_999).status_code == 202
    resumed = device.put_part(address(), new, 100_000, 199_999)
    assert resumed.status_code == 416 and resumed.json()["offset"] == 0
    assert device.put_part(address(), new, 0, 99_999).status_code == 202
    assert device.put_part(address(), new, 100_000, 199_999).status_code == 201
    assert (server.root / "t-evans" / RID / SEG).read_bytes() == new


# -- who may do what (P6) ----------------------------------------------------------------------

def test_device_can_neither_list_nor_read_nor_delete(server, device):
    data = os.urandom(10_000)
    assert device.put(address(), data).status_code == 201
    for method, path in (("GET", "/v1/teachers/t-evans/recordings"), ("GET", address()),
                         ("DELETE", address(name=None)), ("POST", address())):
        answer = device.request(method, path)
        assert answer.status_code == 403, (method, path)
        assert "error" in answer.json()
        assert data not in answer.content
    assert server.stored("t-evans") == {RID: {SEG: (len(data), sha(data))}}


def test_teacher_cannot_upload(server, evans):
    data = os.urandom(10_000)
    assert evans.put(address(), data).status_code == 403
    assert evans.request("HEAD", address()).status_code == 403
    assert files_under(server.root) == []


def test_a_teacher_never_reaches_another_teachers_recordings(server, device, jones, evans):
    data = os.urandom(10_000)
    assert device.put(address("t-evans"), data).status_code == 201
    assert jones.request("GET", "/v1/teachers/t-evans/recordings").status_code == 403
    assert jones.request("GET", address("t-evans")).status_code == 403
    assert jones.request("DELETE", address("t-evans", name=None)).status_code == 403
    # Not a 404 either: nothing tells t-jones which of t-evans's recordings exist.
    assert jones.request("DELETE", address("t-evans", RID2, name=None)).status_code == 403
    assert jones.request("GET", "/v1/teachers/t-jones/recordings").json() == []
    assert evans.request("GET", address("t-evans")).content == data


def test_a_certificate_without_a_role_may_do_nothing(server, device, certs):
    assert device.put(address(), b"abc").status_code == 201
    nobody = Client(server, certs.no_role, certs.pki.ca_cert)
    assert nobody.put(address(name="manifest.age"), b"abc").status_code == 403
    assert nobody.request("GET", "/v1/teachers/t-evans/recordings").status_code == 403
    assert nobody.request("GET", address()).status_code == 403


def _listening(server) -> bool:
    """Whether the server's port accepts a TCP connection (the handshake is not attempted)."""
    try:
        socket.create_connection((server.host, server.port), timeout=1).close()
        return True
    except OSError:
        return False


def _eventually(check, seconds: float = 2.0):
    deadline = time.monotonic() + seconds
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return result


def test_a_client_without_a_certificate_fails_the_handshake(server, certs):
    anonymous = Client(server, None, certs.pki.ca_cert)
    with pytest.raises(requests.exceptions.ConnectionError):
        anonymous.put(address(), b"abc")
    assert _eventually(lambda: server.handshake_failures)
    assert server.requests_log == [] and files_under(server.root) == []


def test_a_client_certificate_from_another_ca_fails_the_handshake(server, certs):
    impostor = Client(server, certs.foreign_device, certs.pki.ca_cert)
    with pytest.raises(requests.exceptions.ConnectionError):
        impostor.put(address(), b"abc")
    assert _eventually(lambda: server.handshake_failures)
    assert server.requests_log == [] and files_under(server.root) == []


def test_a_client_checking_the_server_against_another_ca_refuses_it(server, certs):
    wary = Client(server, certs.device, certs.other.ca_cert)
    with pytest.raises(requests.exceptions.SSLError):
        wary.put(address(), b"abc")
    assert files_under(server.root) == []


def raw_request(server: AccountServer, credential: Credential, ca: Path, method: str,
                path: str, body: bytes = b"", headers: dict | None = None) -> int:
    """A request whose path goes out byte for byte (requests would normalise `..` away)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(credential.cert, credential.key)
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context,
                                             timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_paths_outside_the_api_are_refused_and_write_nothing(server, certs, tmp_path):
    body = b"escape attempt"
    headers = {"X-Classcam-SHA256": sha(body), "X-Classcam-Size": str(len(body))}
    base = f"/v1/teachers/t-evans/recordings/{RID}"
    paths = [
        f"/v1/teachers/../recordings/{RID}/{SEG}",
        f"/v1/teachers/%2e%2e/recordings/{RID}/{SEG}",
        f"{base}/../../../../escape",
        f"{base}/..%2f..%2f..%2fescape",
        f"{base}/..",
        f"{base}/.",
        f"/v1/teachers/t-evans/recordings/..%2f..%2f/{SEG}",
        f"{base}/{SEG}/../../x",
        f"{base}/.{SEG}.partial",
        f"{base}/seg-1.ts.age",
        f"{base}/{SEG}%00",
        f"{base}/{SEG}\\..\\x",
        f"/v1/teachers/t-evans/recordings/{RID.upper()}/{SEG}",
        f"/v1/teachers/T-Evans/recordings/{RID}/{SEG}",
        f"/v1/teachers/.hidden/recordings/{RID}/{SEG}",
        f"{base}/manifest.age?x=../../y",
        f"{base}//{SEG}",
        f"//v1/teachers/t-evans/recordings/{RID}/{SEG}",
        f"/v2/teachers/t-evans/recordings/{RID}/{SEG}",
        "/",
    ]
    outside_before = files_under(tmp_path)
    for path in paths:
        status = raw_request(server, certs.device, certs.pki.ca_cert, "PUT", path, body, headers)
        assert status in (400, 404), path
        status = raw_request(server, certs.evans, certs.pki.ca_cert, "GET",
                             path.replace(SEG, "..%2f..%2f..%2fca.key"))
        assert status in (400, 404), path
    assert files_under(server.root) == []
    assert files_under(tmp_path) == outside_before


# -- the teacher's client ----------------------------------------------------------------------

def _upload_recording(device: Client, teacher: str, recording: str) -> dict[str, bytes]:
    files = {"seg-000001.ts.age": os.urandom(3_000_000), "seg-000002.ts.age": os.urandom(1234),
             "manifest.age": os.urandom(700)}
    for name, data in files.items():
        assert device.put(address(teacher, recording, name), data).status_code == 201
    return files


def test_teacher_lists_downloads_and_deletes_their_recording(server, device, certs, tmp_path):
    files = _upload_recording(device, "t-evans", RID)
    theirs = _upload_recording(device, "t-jones", RID2)
    account = Account(server.url, "t-evans", certs.evans.cert, certs.evans.key, certs.pki.ca_cert)

    listing = account.recordings()
    assert [r["recording_id"] for r in listing] == [RID]
    assert {f["name"]: (f["size"], f["sha256"]) for f in listing[0]["files"]} == \
        {name: (len(data), sha(data)) for name, data in files.items()}

    out = tmp_path / "downloads" / RID
    paths = account.download(RID, out)
    assert sorted(p.name for p in paths) == sorted(files)
    for path in paths:
        assert path.parent == out and path.read_bytes() == files[path.name]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)   # no temporary files left

    account.delete(RID)
    assert account.recordings() == []
    assert server.stored("t-evans") == {}
    assert set(server.stored("t-jones")[RID2]) == set(theirs)
    with pytest.raises(AccountError) as deleted:
        account.delete(RID)
    assert deleted.value.status == 404


def test_download_refuses_a_file_that_does_not_match_the_servers_hash(server, device, certs,
                                                                      tmp_path):
    files = _upload_recording(device, "t-evans", RID)
    account = Account(server.url, "t-evans", certs.evans.cert, certs.evans.key, certs.pki.ca_cert)
    account.recordings()   # the server now knows each file's hash
    # Bit rot on the server's disk: same size and time, different bytes.
    stored = server.root / "t-evans" / RID / "seg-000001.ts.age"
    times = stored.stat()
    with open(stored, "r+b") as f:
        f.seek(1_000_000)
        f.write(bytes(b ^ 0xFF for b in files["seg-000001.ts.age"][1_000_000:1_000_010]))
    os.utime(stored, ns=(times.st_atime_ns, times.st_mtime_ns))

    out = tmp_path / "downloads"
    with pytest.raises(AccountError, match="seg-000001.ts.age.*hashes to"):
        account.download(RID, out)
    assert not (out / "seg-000001.ts.age").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_account_errors_say_why_in_one_line(server, certs):
    wrong_cert = Account(server.url, "t-evans", certs.jones.cert, certs.jones.key,
                         certs.pki.ca_cert)
    with pytest.raises(AccountError) as refused:
        wrong_cert.recordings()
    assert refused.value.status == 403 and str(refused.value).startswith("403 ")
    assert "\n" not in str(refused.value)

    with pytest.raises(AccountError, match="https"):
        Account(server.url.replace("https", "http"), "t-evans", certs.evans.cert,
                certs.evans.key, certs.pki.ca_cert)

    url = server.url
    server.stop()
    gone = Account(url, "t-evans", certs.evans.cert, certs.evans.key, certs.pki.ca_cert,
                   timeout=(2, 2))
    with pytest.raises(AccountError, match="cannot reach") as unreachable:
        gone.recordings()
    assert unreachable.value.status is None and "\n" not in str(unreachable.value)


# -- faults ------------------------------------------------------------------------------------

def test_refuse_closes_the_port_and_clear_opens_it_again(server, device):
    data = os.urandom(1000)
    assert device.put(address(name="seg-000001.ts.age"), data).status_code == 201
    port = server.port
    server.faults.set("refuse")
    # The same keep-alive session as before: its open connection was cut too.
    with pytest.raises(requests.exceptions.ConnectionError, match="(?i)refused"):
        device.put(address(name="seg-000002.ts.age"), data)
    server.faults.clear("refuse")
    assert server.port == port
    assert device.put(address(name="seg-000002.ts.age"), data).status_code == 201

    server.faults.set("refuse", seconds=0.3)
    with pytest.raises(requests.exceptions.ConnectionError):
        device.put(address(name="seg-000003.ts.age"), data)
    assert _eventually(lambda: _listening(server), seconds=5)  # by itself, after 0.3 s
    assert device.put(address(name="seg-000003.ts.age"), data).status_code == 201


def test_error_500_for_the_next_count_requests(server, device):
    data = os.urandom(1000)
    server.faults.set("error_500", count=2)
    assert [device.put(address(), data).status_code for _ in range(3)] == [500, 500, 201]
    assert server.created() == [("t-evans", RID, SEG)]


def test_too_many_says_when_to_retry(server, device):
    server.faults.set("too_many", count=1, seconds=7)
    busy = device.put(address(), b"abc")
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "7"
    assert server.stored("t-evans") == {}
    assert device.put(address(), b"abc").status_code == 201


def test_stall_outlasts_a_client_read_timeout(server, device):
    server.faults.set("stall", count=1, seconds=3)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        device.put(address(), b"abc", timeout=(5, 1))
    assert time.monotonic() - started < 2.5
    assert server.stored("t-evans") == {}
    assert device.put(address(), b"abc").status_code == 201


def test_slow_answers_late_but_right(server, device):
    server.faults.set("slow", count=1, seconds=0.5)
    started = time.monotonic()
    assert device.put(address(), b"abc").status_code == 201
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert device.request("HEAD", address()).status_code == 200
    assert time.monotonic() - started < 0.5


def test_reset_mid_body_of_a_whole_put_keeps_nothing(server, device):
    data = os.urandom(1_000_000)
    server.faults.set("reset_mid_body", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        device.put(address(), data)
    assert server.stored("t-evans") == {} and files_under(server.root) == []
    assert server.requests_log[-1]["fault"] == "reset_mid_body"
    assert 0 < server.requests_log[-1]["bytes"] < len(data)
    assert device.put(address(), data).status_code == 201


def test_a_lost_answer_is_made_good_by_the_retry(server, device):
    data = os.urandom(10_000)
    server.faults.set("drop_answer", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        device.put(address(), data)
    assert server.stored("t-evans") == {RID: {SEG: (len(data), sha(data))}}
    retry = device.put(address(), data)
    assert retry.status_code == 200 and retry.json()["sha256"] == sha(data)
    assert server.created() == [("t-evans", RID, SEG)]


# -- a large upload ----------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_a_large_upload_keeps_memory_flat(server, device, tmp_path):
    size = 200 * 1024 * 1024
    big = tmp_path / "big.ts.age"
    block, digest = os.urandom(1024 * 1024), hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(size // len(block)):
            piece = block[i:] + block[:i]
            f.write(piece)
            digest.update(piece)
    try:
        Path("/proc/self/clear_refs").write_text("5")   # start the peak (VmHWM) from here
    except OSError:
        pass
    before = min(_status_kb("VmRSS"), _status_kb("VmHWM"))
    with open(big, "rb") as body:
        answer = device.request("PUT", address(), data=body, timeout=(5, 120), headers={
            "X-Classcam-SHA256": digest.hexdigest(), "X-Classcam-Size": str(size)})
    growth_mb = (_status_kb("VmHWM") - before) / 1024
    assert answer.status_code == 201 and answer.json()["sha256"] == digest.hexdigest()
    assert server.stored("t-evans") == {RID: {SEG: (size, digest.hexdigest())}}
    assert growth_mb < 50, f"peak memory grew {growth_mb:.0f} MB during a 200 MB upload"


# -- for a person ------------------------------------------------------------------------------

def test_command_line_server_makes_a_pki_and_serves(tmp_path):
    pki_dir = tmp_path / "pki"
    process = subprocess.Popen(
        [sys.executable, "-m", "hwsim.account_server", "--root", str(tmp_path / "root"),
         "--pki", str(pki_dir), "--port", "0", "--device", "sim-unit-1"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        url = None
        for line in process.stdout:
            if line.startswith("account server: "):
                url = line.split()[2]
                break
        assert url and url.startswith("https://127.0.0.1:")
        device_cert = Credential(pki_dir / f"{DEVICE}-sim-unit-1.pem",
                                 pki_dir / f"{DEVICE}-sim-unit-1.key")
        head = requests.head(url + address(), cert=(str(device_cert.cert), str(device_cert.key)),
                             verify=str(pki_dir / "ca.pem"), timeout=5)
        assert head.status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
