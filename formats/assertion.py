"""A start (or discard) assertion from a teacher's FIDO2 security key: what the PIN pad sends and
what the unit checks (DESIGN.md section 4, "Start token from a security key"). Shared by the pad
(`pinpad/security_key.py`) and the unit (`appliance/assertion.py`), so both build and read the
same bytes.

The pad makes the *client data*, JSON bytes binding what a JWT start token's claims bind:

    {"classcam_assertion":1,"sub":"t-evans","aud":"unit-1","nonce":"...","act":"start",
     "rcpt":"age1...","iat":1764190000}

and has the security key sign SHA-256 of them (the CTAP2 clientDataHash) with the teacher's
credential for the relying party `RP_ID`. It sends them with the key's answer over the pad link:

    {"type": "assertion", "assertion": {"teacher": "t-evans", "credential_id": B64URL,
     "authenticator_data": B64URL, "client_data": B64URL, "signature": B64URL}}

The unit reads the client data from exactly the bytes the signature covers (never a
re-serialisation), with a parser that refuses duplicate keys and any field not listed here.

    data = client_data("t-evans", "unit-1", nonce, "start", recipient)
    fields = parse_client_data(data)          # ValueError with the reason if anything is off
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING


from formats.card import SECURITY_KEY_RP_ID, strict_json
from formats.ids import is_device_id, is_teacher_id
from formats.keytext import b64, unb64

if TYPE_CHECKING:  # fido2.ctap2 imports its USB HID backend, which is per platform
    from fido2.ctap2.pin import ClientPin

RP_ID = SECURITY_KEY_RP_ID  # "classcam"
RP_ID_HASH = hashlib.sha256(RP_ID.encode()).digest()
CLIENT_DATA_VERSION = 1
ACTIONS = ("start", "discard")
MAX_CLIENT_DATA = 1024
MAX_FIELD = 2048  # base64url characters of one binary field
MESSAGE_FIELDS = frozenset({"teacher", "credential_id", "authenticator_data", "client_data",
                            "signature"})
_CLIENT_FIELDS = frozenset({"classcam_assertion", "sub", "aud", "nonce", "act", "rcpt", "iat"})
NO_CREDENTIAL = "no classcam credential for this teacher on this key"
LOCKED = "security key locked"
NOT_TOUCHED = "security key not touched"


class SecurityKeyError(Exception):
    """A security key did not do what was asked; `reason` is short enough for a pad to say or
    show (enrolment prints it)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ClientData:
    """The fields of a parsed client data (the claims of an assertion)."""

    teacher_id: str
    device_id: str
    nonce: str
    action: str
    recipient: str
    issued_at: int


@dataclass(frozen=True)
class Assertion:
    """The binary fields of an assertion message, decoded but not yet verified."""

    teacher_id: str
    credential_id: bytes
    authenticator_data: bytes
    client_data: bytes
    signature: bytes

    def message(self) -> dict:
        """The pad link message carrying this assertion."""
        return {"type": "assertion", "assertion": {
            "teacher": self.teacher_id, "credential_id": b64(self.credential_id),
            "authenticator_data": b64(self.authenticator_data),
            "client_data": b64(self.client_data), "signature": b64(self.signature)}}


def client_data(teacher_id: str, device_id: str, nonce: str, action: str, recipient: str,
                now: float | None = None) -> bytes:
    """The client data a pad has the security key sign for the unit's challenge `nonce`."""
    doc = {"classcam_assertion": CLIENT_DATA_VERSION, "sub": teacher_id, "aud": device_id,
           "nonce": nonce, "act": action, "rcpt": recipient,
           "iat": int(time.time() if now is None else now)}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def client_data_hash(data: bytes) -> bytes:
    """The CTAP2 clientDataHash of `data`: what the security key signs, after its
    authenticator data."""
    return hashlib.sha256(data).digest()


def parse_client_data(data: bytes) -> ClientData:
    """The fields of client data made by `client_data`; ValueError says what is wrong."""
    if len(data) > MAX_CLIENT_DATA:
        raise ValueError("client data too long")
    try:
        doc = strict_json(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"client data is not JSON ({str(e)[:60]})") from None
    if not isinstance(doc, dict) or set(doc) != _CLIENT_FIELDS:
        raise ValueError(f"client data must have exactly the fields {sorted(_CLIENT_FIELDS)}")
    version = doc["classcam_assertion"]
    if type(version) is not int or version != CLIENT_DATA_VERSION:
        raise ValueError(f"unsupported client data version {version!r:.20}")
    for field in ("sub", "aud", "nonce", "act", "rcpt"):
        if not isinstance(doc[field], str):
            raise ValueError(f"{field} must be a string")
    if type(doc["iat"]) is not int:
        raise ValueError("iat must be an integer")
    if not is_teacher_id(doc["sub"]):
        raise ValueError("sub is not a teacher id")
    if not is_device_id(doc["aud"]):
        raise ValueError("aud is not a device id")
    return ClientData(doc["sub"], doc["aud"], doc["nonce"], doc["act"], doc["rcpt"], doc["iat"])


def parse_message(inner: object) -> Assertion:
    """The inner object of an `{"type": "assertion", "assertion": {...}}` link message, decoded;
    ValueError unless it has exactly `MESSAGE_FIELDS`, a teacher id and base64url fields."""
    if not isinstance(inner, dict) or set(inner) != MESSAGE_FIELDS:
        raise ValueError(f"assertion takes exactly {sorted(MESSAGE_FIELDS)}")
    if not is_teacher_id(inner["teacher"]):
        raise ValueError("teacher is not a teacher id")
    raw = {}
    for field in MESSAGE_FIELDS - {"teacher"}:
        value = inner[field]
        if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
            raise ValueError(f"{field} must be a base64url string of at most {MAX_FIELD}")
        try:
            raw[field] = unb64(value)
        except ValueError:
            raise ValueError(f"{field} is not base64url") from None
    return Assertion(inner["teacher"], raw["credential_id"], raw["authenticator_data"],
                     raw["client_data"], raw["signature"])


def ctap_reason(code: int, client_pin: ClientPin | None = None) -> str:
    """A short reason for a CTAP error `code` from a security key. After a wrong PIN, `client_pin`
    (if given) is asked how many tries are left."""
    from fido2.ctap import CtapError  # on the pad or the teacher's computer, with a key
    err = CtapError.ERR
    if code == err.PIN_INVALID:
        if client_pin is None:
            return "wrong PIN"
        try:
            left, _ = client_pin.get_pin_retries()
        except (CtapError, OSError):
            return "wrong PIN"
        return f"wrong PIN, {left} {'try' if left == 1 else 'tries'} left"
    if code == err.PIN_BLOCKED:
        return LOCKED
    if code == err.PIN_AUTH_BLOCKED:
        return "wrong PIN 3 times: unplug the security key and plug it in again"
    if code == err.PIN_NOT_SET:
        return "the security key has no PIN: set one first"
    if code == err.NO_CREDENTIALS:
        return NO_CREDENTIAL
    if code in (err.USER_ACTION_TIMEOUT, err.ACTION_TIMEOUT, err.KEEPALIVE_CANCEL,
                err.OPERATION_DENIED):
        return NOT_TOUCHED
    return f"security key refused ({getattr(code, 'name', code)})"
