"""The teacher card: who a teacher is, the key their start tokens are signed with, and the age
recipient their recordings are encrypted to. Made on the teacher's own computer (`classcam keys
new`), enrolled on the unit by IT (`classcam roster add`).

A card file (version 2) is one JSON object with exactly two fields:

    {"classcam_card": 2, "jws": "<compact JWS>"}

The JWS (RFC 7515, compact serialisation) is signed with EdDSA (Ed25519, RFC 8037) by the card's
own signing key. Its protected header is exactly `{"alg": "EdDSA", "typ": "classcam-card"}` and
its payload, the bytes the signature covers, is the card itself:

    {"classcam_card": 2, "teacher_id": "t-evans", "name": "Ms Evans",
     "signing_key": "<base64url raw Ed25519 public key>", "recipient": "age1..."}

and, for a teacher who starts recordings with a FIDO2 security key, one more field naming the
credential `classcam keys new --security-key` made on it (formats/assertion.py):

     "security_key": {"rp_id": "classcam", "credential_id": "<base64url>",
                      "public_key": "<base64url CBOR COSE key, ES256 or EdDSA>"}

The signing key always signs the card (on the teacher's computer, as before); a card with a
security key also accepts start tokens that key signs. Cards without the field parse as before.

Everything is read from those signed bytes, never from a copy or a re-serialisation: the parser
verifies the JWS with PyJWT, passing the key the payload names as a key *object* and the algorithm
list `["EdDSA"]` alone, then parses the verified bytes with a JSON parser that refuses a duplicate
key, and accepts exactly the fields above. So nobody can swap the recipient (P5), the id or the
name without the teacher's signing key, and no two parsers can read different cards from one
file. Version 1 cards (signed over a re-serialisation) are refused with a message saying how to
re-sign them (`classcam keys card`).

    card, data = TeacherCard.create("t-evans", "Ms Evans", signing_key, recipient)
    TeacherCard.parse(data).fingerprint     # CardRejected(reason=...) if anything is off
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.utils import base64url_decode

from formats import ids
from formats.keytext import b64, ed25519_public_key, fingerprint, raw_public, unb64

if TYPE_CHECKING:  # python-fido2 is imported for a card that names a security key, only
    from fido2.cose import CoseKey

CARD_VERSION = 2
MAX_CARD_BYTES = 4096
MAX_NAME = 200
JWS_HEADER = {"alg": "EdDSA", "typ": "classcam-card"}
_FILE_FIELDS = {"classcam_card", "jws"}
_FIELDS = {"classcam_card", "teacher_id", "name", "signing_key", "recipient"}
_OPTIONAL = {"security_key"}
_SECURITY_KEY_FIELDS = {"rp_id", "credential_id", "public_key"}
SECURITY_KEY_RP_ID = "classcam"  # formats.assertion.RP_ID, which imports this module
MAX_CREDENTIAL_ID = 1023  # CTAP2 allows credential ids up to 1023 bytes


class CardRejected(Exception):
    """A teacher card that must not be used; `reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SecurityKeyCredential:
    """A credential on a teacher's FIDO2 security key: its id and its COSE public key (ES256 or
    EdDSA), for the relying party `classcam`."""

    credential_id: bytes
    public_key: CoseKey

    def as_field(self) -> dict:
        """The card's `security_key` field."""
        from fido2 import cbor
        return {"rp_id": SECURITY_KEY_RP_ID, "credential_id": b64(self.credential_id),
                "public_key": b64(cbor.encode(dict(self.public_key)))}


@dataclass(frozen=True)
class TeacherCard:
    """A verified teacher card: who the teacher is, the key their tokens are signed with, and the
    age recipient their recordings are encrypted to."""

    teacher_id: str
    name: str
    signing_key: Ed25519PublicKey
    recipient: str
    security_key: SecurityKeyCredential | None = None

    @classmethod
    def create(cls, teacher_id: str, name: str, signing_key: Ed25519PrivateKey,
               recipient: str, security_key: SecurityKeyCredential | None = None
               ) -> tuple[TeacherCard, bytes]:
        """Sign a new card; returns the card and its file contents. Raises `CardRejected` for
        a field the parser would refuse."""
        payload: dict[str, Any] = {
            "classcam_card": CARD_VERSION, "teacher_id": teacher_id, "name": name,
            "signing_key": b64(raw_public(signing_key.public_key())), "recipient": recipient}
        if security_key is not None:
            payload["security_key"] = security_key.as_field()
        payload_bytes = json.dumps(payload, ensure_ascii=False).encode()
        token = jwt.PyJWS().encode(payload_bytes, signing_key, algorithm="EdDSA",
                                   headers={"typ": JWS_HEADER["typ"]})
        data = (json.dumps({"classcam_card": CARD_VERSION, "jws": token}) + "\n").encode()
        return cls.parse(data), data

    @classmethod
    def parse(cls, data: bytes) -> TeacherCard:
        """Parse and verify a card file, or raise `CardRejected` with the reason."""
        if len(data) > MAX_CARD_BYTES:
            raise CardRejected("card is too large")
        try:
            doc = strict_json(data)
        except ValueError as e:
            raise CardRejected(f"card is not JSON{_detail(e)}") from None
        if not isinstance(doc, dict):
            raise CardRejected("card is not a JSON object")
        version = doc.get("classcam_card")
        if version == 1 and type(version) is int:
            raise CardRejected(
                "this is a version 1 card, whose signature does not cover the exact bytes it "
                "carries: re-sign it with `classcam keys card --card CARD --key "
                "YOUR.signing.pem` (or make new keys with `classcam keys new`)")
        if set(doc) != _FILE_FIELDS:
            raise CardRejected(f"card must have exactly the fields {sorted(_FILE_FIELDS)}")
        if version != CARD_VERSION or type(version) is not int:
            raise CardRejected(f"unsupported card version {version!r}")
        if not isinstance(doc["jws"], str):
            raise CardRejected("jws must be a string")
        fields = _verified_fields(doc["jws"])
        security_key = fields.get("security_key")
        return cls(fields["teacher_id"], fields["name"], _public_key(fields["signing_key"]),
                   fields["recipient"],
                   None if security_key is None else _security_key(security_key))

    @property
    def fingerprint(self) -> str:
        """Short hex fingerprint of the signing key, for a person to compare."""
        return fingerprint(self.signing_key)


def resign_v1(data: bytes, signing_key: Ed25519PrivateKey) -> tuple[TeacherCard, bytes]:
    """A version 2 card with the fields of the version 1 card `data`, which must verify and be
    signed by `signing_key` (the teacher's own key): the migration behind `classcam keys card`."""
    try:
        doc = strict_json(data)
    except ValueError as e:
        raise CardRejected(f"card is not JSON{_detail(e)}") from None
    v1_fields = {"classcam_card", "teacher_id", "name", "signing_key", "recipient", "signature"}
    if not isinstance(doc, dict) or set(doc) != v1_fields or doc["classcam_card"] != 1 \
            or not all(isinstance(doc[f], str) for f in v1_fields - {"classcam_card"}):
        raise CardRejected("not a version 1 card")
    if doc["signing_key"] != b64(raw_public(signing_key.public_key())):
        raise CardRejected("the card was not made with this signing key")
    body = {f: doc[f] for f in v1_fields - {"signature"}}
    signed = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        signing_key.public_key().verify(unb64(doc["signature"]),
                                        b"classcam teacher card v1\n" + signed)
    except (InvalidSignature, ValueError):
        raise CardRejected("the version 1 card's signature does not verify") from None
    return TeacherCard.create(doc["teacher_id"], doc["name"], signing_key, doc["recipient"])


def strict_json(data: bytes | str) -> Any:
    """Parse UTF-8 JSON, refusing what parsers disagree on: a duplicate key in an object, and
    NaN or Infinity. ValueError says what was wrong."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _verified_fields(token: str) -> dict:
    """The card fields from the JWS payload, once the signature over those exact bytes verifies
    with the key they name."""
    try:
        header = strict_json(base64url_decode(token.split(".", 1)[0]))
        unverified = jwt.PyJWS().decode_complete(token, options={"verify_signature": False})
        named_key = _fields(unverified["payload"])["signing_key"]
    except CardRejected:
        raise
    except (ValueError, jwt.InvalidTokenError) as e:
        raise CardRejected(f"jws is not a compact JWS{_detail(e)}") from None
    if header != JWS_HEADER:
        raise CardRejected(f"jws header must be exactly {json.dumps(JWS_HEADER)}")
    try:
        verified = jwt.PyJWS().decode_complete(token, key=_public_key(named_key),
                                               algorithms=["EdDSA"])
    except jwt.InvalidTokenError:
        raise CardRejected("binding signature does not verify") from None
    fields = _fields(verified["payload"])
    if fields["signing_key"] != named_key:  # the same bytes; a guard against a library change
        raise CardRejected("binding signature does not verify")
    return _checked(fields)


def _fields(payload: bytes) -> dict:
    try:
        fields = strict_json(payload)
    except ValueError as e:
        raise CardRejected(f"card payload is not JSON{_detail(e)}") from None
    if not isinstance(fields, dict) or not _FIELDS <= set(fields) <= _FIELDS | _OPTIONAL:
        # (the optional security_key is named in the docs, not here: the message stays the one
        # older units give)
        raise CardRejected(f"card must have exactly the fields {sorted(_FIELDS)}")
    for field in _FIELDS - {"classcam_card"}:
        if not isinstance(fields[field], str):
            raise CardRejected(f"{field} must be a string")
    return fields


def _checked(fields: dict) -> dict:
    if fields["classcam_card"] != CARD_VERSION or type(fields["classcam_card"]) is not int:
        raise CardRejected(f"unsupported card version {fields['classcam_card']!r}")
    problem = ids.teacher_id_problem(fields["teacher_id"])
    if problem is not None:
        raise CardRejected(problem)
    name = fields["name"]
    if not name.strip() or len(name) > MAX_NAME:
        raise CardRejected(f"name must be 1 to {MAX_NAME} characters")
    hidden = _unprintable(name)
    if hidden:
        raise CardRejected(f"name holds control or invisible characters ({hidden})")
    try:
        pyrage.x25519.Recipient.from_str(fields["recipient"])
    except Exception:
        raise CardRejected("recipient is not an age X25519 recipient") from None
    if "security_key" in fields:
        _security_key(fields["security_key"])
    return fields


def _security_key(field: object) -> SecurityKeyCredential:
    """The card's `security_key` field, checked: the classcam relying party, a credential id,
    and an ES256 (P-256) or EdDSA (Ed25519) COSE public key that is a usable point."""
    if not isinstance(field, dict) or set(field) != _SECURITY_KEY_FIELDS \
            or not all(isinstance(v, str) for v in field.values()):
        raise CardRejected(f"security_key must have exactly the string fields "
                           f"{sorted(_SECURITY_KEY_FIELDS)}")
    if field["rp_id"] != SECURITY_KEY_RP_ID:
        raise CardRejected(f"security_key rp_id must be {SECURITY_KEY_RP_ID!r}")
    from fido2 import cbor
    try:
        credential_id = unb64(field["credential_id"])
        encoded = unb64(field["public_key"])
        cose = cbor.decode(encoded)
    except Exception:  # fido2's CBOR decoder raises what its input provokes
        raise CardRejected("security_key is not base64url credential id and CBOR key") from None
    if not credential_id or len(credential_id) > MAX_CREDENTIAL_ID:
        raise CardRejected(f"security_key credential_id must be 1 to {MAX_CREDENTIAL_ID} bytes")
    if not isinstance(cose, dict) or cbor.encode(cose) != encoded:
        raise CardRejected("security_key public_key is not a canonical CBOR map")
    return SecurityKeyCredential(credential_id, _cose_key(cose))


def _cose_key(cose: dict) -> CoseKey:
    from fido2.cose import ES256, EdDSA
    try:
        if cose == {1: 2, 3: ES256.ALGORITHM, -1: 1, -2: cose.get(-2), -3: cose.get(-3)}:
            x, y = cose[-2], cose[-3]
            if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == len(y) == 32):
                raise ValueError("a P-256 coordinate is 32 bytes")
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
            return ES256(cose)
        if cose == {1: 1, 3: EdDSA.ALGORITHM, -1: 6, -2: cose.get(-2)}:
            ed25519_public_key(cose[-2])
            return EdDSA(cose)
    except ValueError as e:
        raise CardRejected(f"security key is refused: {e}") from None
    raise CardRejected("security_key public_key must be an ES256 (P-256) or EdDSA (Ed25519) "
                       "COSE key")


def _public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = unb64(text)
    except ValueError:
        raise CardRejected("signing_key is not a base64url Ed25519 public key") from None
    try:
        return ed25519_public_key(raw)
    except ValueError as e:
        raise CardRejected(f"signing key is refused: {e}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    doc: dict = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r:.40}")
        doc[key] = value
    return doc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _detail(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f" ({text[:80]})" if text else ""


def printable(text: str) -> str:
    """`text` as it may be shown on a terminal: every control, format (bidi override, zero
    width), separator, private-use or unassigned character written as a Python escape such as
    `\\u202e`, so that the text cannot move the cursor, recolour or reorder what follows it."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _UNPRINTABLE else c
                   for c in text)


# Unicode categories a display name must not hold: Cc control (newline, escape), Cf format (bidi
# overrides and isolates, zero-width characters), Cs lone surrogates, Co private use, Cn
# unassigned, Zl/Zp line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unprintable(text: str) -> str:
    """The characters of `text` that `printable` would escape, escaped, or "" if none."""
    return printable("".join(c for c in dict.fromkeys(text)
                             if unicodedata.category(c) in _UNPRINTABLE))
