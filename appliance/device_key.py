"""The unit's own Ed25519 key: it signs manifests so a teacher can tell the recording came whole
from this unit. It decrypts nothing (P5), so it is kept unencrypted, readable by the daemon only.

    key = load_or_create(state_dir)
    key = load(state_dir)       # DeviceKeyError says what is wrong with the file
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from formats.durable import atomic_write

FILE = "device.key"


class DeviceKeyError(Exception):
    """The unit's key file is missing or unusable; the message says which and why."""


def load(state_dir: Path) -> Ed25519PrivateKey:
    """The unit's signing key, or `DeviceKeyError`."""
    path = state_dir / FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise DeviceKeyError(f"{path} does not exist (the daemon makes it on first start)") from None
    except (OSError, ValueError, TypeError) as e:
        raise DeviceKeyError(f"{path}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DeviceKeyError(f"{path} is not an Ed25519 key")
    return key


def load_or_create(state_dir: Path) -> Ed25519PrivateKey:
    """The unit's signing key, made on first start."""
    if (state_dir / FILE).exists():
        return load(state_dir)
    key = Ed25519PrivateKey.generate()
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / FILE, key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    return key
