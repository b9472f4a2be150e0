"""Text forms of Ed25519 keys and signatures shared by teacher cards and manifests."""
from __future__ import annotations

import base64
import hashlib
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_core_ed25519_BYTES, crypto_core_ed25519_is_valid_point


def ed25519_public_key(raw: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key whose 32 raw bytes are `raw`; ValueError unless they are the
    canonical encoding of a point of the curve's prime-order subgroup, as every real key is.

    cryptography takes any 32 bytes, including the identity and the other small-order points:
    with such a "key", a fixed signature verifies over every message, without a private key.
    libsodium's check (through PyNaCl) refuses those, their non-canonical encodings and points
    outside the prime-order subgroup."""
    if not isinstance(raw, bytes) or len(raw) != crypto_core_ed25519_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    if not crypto_core_ed25519_is_valid_point(raw):
        raise ValueError("not a usable Ed25519 public key (a small-order, non-canonical or "
                         "invalid point)")
    return Ed25519PublicKey.from_public_bytes(raw)


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short hex fingerprint for a person to compare, e.g. `f968:528b:...` (128 bits)."""
    digest = hashlib.sha256(raw_public(key)).hexdigest()[:32]
    return ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def b64(raw: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Decode unpadded base64url; ValueError on anything else."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
