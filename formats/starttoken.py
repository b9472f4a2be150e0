"""Minting a start token (DESIGN.md section 4), as a PIN pad does. The unit's side, which
checks tokens, is appliance/token.py; both the pad service and the unit's tools mint here.

    token = mint(signing_key, "t-evans", "unit-1", nonce, recipient)
"""
from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def mint(signing_key: Ed25519PrivateKey, teacher_id: str, device_id: str, nonce: str,
         recipient: str, action: str = "start", lifetime_s: int = 60,
         now: float | None = None) -> str:
    """Make a start (or discard) token: a JWT signed with EdDSA, `kid` the teacher id."""
    iat = int(time.time() if now is None else now)
    claims = {"sub": teacher_id, "aud": device_id, "nonce": nonce, "iat": iat,
              "exp": iat + lifetime_s, "act": action, "rcpt": recipient}
    return jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": teacher_id})
