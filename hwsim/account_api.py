"""The upload API's contract, as a school's platform must keep it: which addresses exist, who may
do what to them, and what the server answers. README.md ("The upload API") describes it for a
person; this module is the same contract as code, and the reference server (`account_server.py`)
applies it to every request before anything else. Nothing here knows about faults or storage.

    address = parse_address("/v1/teachers/t-evans/recordings")   # Address("t-evans")
    authorize("GET", address, *role_and_name(peer_certificate))  # Refusal(403, ...) if not allowed

**Who.** Every client authenticates with its own certificate (mutual TLS). The certificate's
organisational unit is its role, its common name its identity:

    role (OU)          identity (CN)   may
    classcam-device    device id       PUT and HEAD files (of any teacher's recordings); nothing else
    classcam-teacher   teacher id      GET the list and the files of its own recordings, DELETE
                                       its own recordings; nothing of another teacher's

The role is checked before anything stored is looked at, so a teacher asking for another teacher's
recording gets 403 whether or not it exists (P6).

**Where.** `/v1/teachers/{teacher_id}/recordings[/{recording_id}[/{name}]]`, every part checked
whole against the id rules of `formats/ids.py`: anything else is 404 (no such address) or 400 (a
malformed part), and nothing that passes can name a file outside the teacher's directory.

**Answers** (JSON bodies; a refusal is `{"error": reason, ...}`):

    PUT a file (device), headers X-Classcam-SHA256 and X-Classcam-Size:
      201 {"sha256", "size"}   stored
      200 {"sha256", "size"}   the same content was already stored (a retry)
      409 {"error", "sha256"}  different content is stored there: a stored file is never replaced
      422                      the body's hash or size is not what the headers say; nothing stored
      411                      no Content-Length
      202 {"offset"}           a Content-Range chunk that is not the last
      416 {"offset"}           a chunk that does not start at the server's offset (offset 0 when
                               the declared hash or size differs from the upload in progress)
      429 + Retry-After        another PUT of the same address is still being written
      507                      the store is full (the unit retries it like a 5xx)
    HEAD a file (device):      200 + X-Classcam-SHA256/-Size (complete), 200 + X-Classcam-Offset
                               (partly there), 404 (nothing)
    GET the list (teacher):    200 [{"recording_id", "files": [{"name", "size", "sha256"}]}]
    GET a file (teacher):      200, the bytes, with X-Classcam-SHA256 and X-Classcam-Size
    DELETE a recording (teacher): 204 (partial uploads go too), 404 if there is none
"""
from __future__ import annotations

from dataclasses import dataclass

from formats import ids

DEVICE = "classcam-device"
TEACHER = "classcam-teacher"

# (method, kind of address) each role may use; the teacher only at its own addresses.
MAY: dict[str, frozenset[tuple[str, str]]] = {
    DEVICE: frozenset({("PUT", "file"), ("HEAD", "file")}),
    TEACHER: frozenset({("GET", "list"), ("GET", "file"), ("DELETE", "recording")}),
}


@dataclass(frozen=True)
class Address:
    """A parsed, valid path: the list (`recording` None), a recording (`name` None) or a file."""

    teacher: str
    recording: str | None = None
    name: str | None = None

    @property
    def kind(self) -> str:
        return "list" if self.recording is None else "recording" if self.name is None else "file"


class Refusal(Exception):
    """An answer other than success: HTTP status, a reason, and extra fields for the JSON body."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None,
                 **fields):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.fields = fields


def parse_address(path: str) -> Address:
    """The address `path` names, or Refusal 404 (no such address) / 400 (a malformed part).
    Nothing that passes can name a file outside the teacher's directory."""
    if "?" in path or "#" in path:
        raise Refusal(400, "query strings and fragments are not part of this API")
    parts = path.split("/")
    if len(parts) not in (5, 6, 7) or parts[:3] != ["", "v1", "teachers"] \
            or parts[4] != "recordings":
        raise Refusal(404, "no such address")
    if not ids.is_teacher_id(parts[3]):
        raise Refusal(400, "malformed teacher id")
    if len(parts) == 5:
        return Address(parts[3])
    if not ids.is_recording_id(parts[5]):
        raise Refusal(400, "malformed recording id (32 lowercase hex digits)")
    if len(parts) == 6:
        return Address(parts[3], parts[5])
    if not ids.is_file_name(parts[6]):
        raise Refusal(400, "malformed file name (seg-NNNNNN.ts.age or manifest.age)")
    return Address(parts[3], parts[5], parts[6])


def authorize(method: str, address: Address, role: str | None, cn: str | None) -> None:
    """Refusal 403 unless the role table above allows `method` on `address` (P6)."""
    if role == DEVICE:
        if (method, address.kind) in MAY[DEVICE]:
            return
        raise Refusal(403, "a device may only PUT and HEAD files")
    if role == TEACHER:
        if cn != address.teacher:
            raise Refusal(403, "a teacher may reach only their own recordings")
        if (method, address.kind) in MAY[TEACHER]:
            return
        raise Refusal(403, "a teacher may only list, GET and DELETE their recordings")
    raise Refusal(403, "client certificate has no classcam role")


def role_and_name(cert: dict | None) -> tuple[str | None, str | None]:
    """(role, common name) from a verified peer certificate (as `ssl.SSLSocket.getpeercert()`
    gives it); None where absent or ambiguous."""
    attributes = [a for rdn in (cert or {}).get("subject", ()) for a in rdn]
    cns = [v for k, v in attributes if k == "commonName"]
    ous = [v for k, v in attributes if k == "organizationalUnitName"]
    cn = cns[0] if len(cns) == 1 else None
    role = ous[0] if len(ous) == 1 and ous[0] in (DEVICE, TEACHER) else None
    return role, cn


def answer_existing(stored: tuple[int, str], sha: str, size: int) -> tuple[int, dict]:
    """The answer to a PUT of an address where a complete file (size, sha256) is stored: 200 for
    the same content (a retry), 409 for different content. A stored file is never replaced."""
    stored_size, stored_sha = stored
    if (stored_size, stored_sha) == (size, sha):
        return 200, {"sha256": stored_sha, "size": stored_size}
    raise Refusal(409, "different content is stored at this address", sha256=stored_sha)
