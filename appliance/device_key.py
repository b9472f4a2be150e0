"""The unit's own Ed25519 key: it signs manifests so a teacher can tell the recording came whole
from this unit. It decrypts nothing (P5), so it is kept unencrypted, readable by the daemon only.

    key = load_or_create(state_dir)
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from uploader.durable import atomic_write

FILE = "device.key"


def load_or_create(state_dir: Path) -> Ed25519PrivateKey:
    """The unit's signing key, made on first start."""
    path = state_dir / FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    return key
