"""Helpers for the security-key tests: enrol a simulated key's credential in a lab's roster (as
`classcam keys new --security-key` does on the teacher's computer), and have a key sign any
client data, also the wrong kinds (no touch, no PIN, another relying party), through fido2's
real Ctap2 and ClientPin classes."""
from __future__ import annotations

import functools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin

from formats.assertion import RP_ID, Assertion, client_data, client_data_hash
from formats.card import SecurityKeyCredential, TeacherCard
from hwsim.lab import PASSPHRASE, Lab
from hwsim.security_key import SimSecurityKey
from teacher_tools.keys import enrol_security_key, load_signing_key

PIN = "246810"


@functools.cache
def signing_key(path: Path) -> Ed25519PrivateKey:
    """A lab teacher's signing key (unsealing takes a second of scrypt: once per file)."""
    return load_signing_key(path, PASSPHRASE)


def enrol(lab: Lab, teacher_id: str, key: SimSecurityKey,
          credential: SecurityKeyCredential | None = None) -> TeacherCard:
    """Make a credential on `key` and put the teacher's re-signed card, naming it, in the lab's
    roster (the unit reads the roster at each token)."""
    files = lab.key_files(teacher_id)
    old = TeacherCard.parse(files.card.read_bytes())
    credential = credential or enrol_security_key(key, teacher_id, old.name, PIN)
    card, data = TeacherCard.create(teacher_id, old.name, signing_key(files.signing_key),
                                    old.recipient, credential)
    (lab.roster_dir / f"{teacher_id}.json").write_bytes(data)
    return card


def credential_for(key: SimSecurityKey, rp_id: str) -> SecurityKeyCredential:
    """A credential on `key` for any relying party (the real enrolment uses `classcam` only)."""
    ctap = Ctap2(key)
    pin = ClientPin(ctap)
    token = pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, rp_id)
    data_hash = client_data_hash(b"enrol")
    made = ctap.make_credential(data_hash, {"id": rp_id, "name": rp_id},
                                {"id": b"t", "name": "t"}, [{"type": "public-key", "alg": -7}],
                                pin_uv_param=pin.protocol.authenticate(token, data_hash),
                                pin_uv_protocol=pin.protocol.VERSION)
    attested = made.auth_data.credential_data
    assert attested is not None
    return SecurityKeyCredential(attested.credential_id, attested.public_key)


def sign(key: SimSecurityKey, teacher_id: str, credential_id: bytes, data: bytes,
         present: bool = True, verified: bool = True, rp_id: str = RP_ID) -> Assertion:
    """`key`'s assertion over `data` (any client data) with the credential `credential_id`:
    `present=False` asks for no touch (UP clear), `verified=False` sends no PIN (UV clear)."""
    ctap = Ctap2(key)
    data_hash = client_data_hash(data)
    auth: dict = {}
    if verified:
        pin = ClientPin(ctap)
        token = pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, rp_id)
        auth = {"pin_uv_param": pin.protocol.authenticate(token, data_hash),
                "pin_uv_protocol": pin.protocol.VERSION}
    response = ctap.get_assertion(rp_id, data_hash,
                                  allow_list=[{"type": "public-key", "id": credential_id}],
                                  options={"up": present}, **auth)
    return Assertion(teacher_id, credential_id, bytes(response.auth_data), data,
                     response.signature)


def claims(card: TeacherCard, device: str, nonce: str, **overrides) -> bytes:
    """Client data for `card`'s teacher, with any field replaced."""
    fields = dict(teacher_id=card.teacher_id, device_id=device, nonce=nonce, action="start",
                  recipient=card.recipient)
    fields.update(overrides)
    return client_data(**fields)
