"""A teacher's own keys, made and kept on the teacher's own computer.

`new_teacher_keys` writes three files into a directory:

* `<id>.signing.pem` - the Ed25519 key that signs the card (and start tokens), sealed with the
  passphrase by `seal_signing_key` (the file keeps the name it had when it was PEM, so that
  nothing that names it changes);
* `<id>.identity.age` - the age X25519 identity that decrypts the teacher's recordings, itself
  encrypted with the passphrase in age's scrypt format, so `age -d` can also unlock it;
* `<id>.card.json` - the public teacher card that IT enrols on the unit.

No private key is ever written unencrypted. A sealed signing key is four lines of text:

    classcam-sealed-key/v1
    scrypt <salt, 16 bytes base64url> <log2 N> 8 1
    chacha20poly1305 <nonce, 12 bytes base64url>
    <base64url ChaCha20-Poly1305 ciphertext of the key's PKCS#8 DER>

The key is scrypt(passphrase, salt, N, r = 8, p = 1), 32 bytes; the first three lines are the
associated data, so the parameters cannot be changed without the tag failing. The work factor is
age's: log2 N = 18 (256 MiB, about 0.8 s on a current PC; unsealing must take as much per guess).
`cryptography` (OpenSSL) does the scrypt and the AEAD, and releases Python's lock while it works,
so unsealing in a thread does not stall an event loop. Files sealed by older versions with
PKCS#8's 2,048-iteration PBKDF2 still load, with a note to re-seal them (`classcam keys reseal`).

With `--security-key`, `new_teacher_keys` also makes a credential for the relying party
`classcam` on the teacher's FIDO2 security key (`enrol_security_key`, through python-fido2's
Ctap2 and ClientPin: the key's own PIN and a touch are required) and names it in the card; the
private key of that credential never leaves the security key.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from fido2.cose import ES256, EdDSA
from fido2.ctap import CtapDevice, CtapError

from formats.assertion import RP_ID, SecurityKeyError, ctap_reason
from formats.card import SecurityKeyCredential, TeacherCard
from formats.durable import atomic_write
from formats.keytext import b64, unb64

MIN_PASSPHRASE = 8
SEALED_MAGIC = "classcam-sealed-key/v1"
SCRYPT_LOG2_N = 18  # as age's own passphrase files: 256 MiB, about 0.8 s on a current PC
SCRYPT_R, SCRYPT_P = 8, 1
MIN_SCRYPT_LOG2_N, MAX_SCRYPT_LOG2_N = 15, 22
_PKCS8_PBKDF2 = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class KeyFileError(Exception):
    """A key file that cannot be used; the message says why."""


@dataclass(frozen=True)
class TeacherKeyFiles:
    """Where a teacher's key files are."""

    signing_key: Path
    identity: Path
    card: Path

    @classmethod
    def in_dir(cls, directory: Path, teacher_id: str) -> TeacherKeyFiles:
        return cls(directory / f"{teacher_id}.signing.pem",
                   directory / f"{teacher_id}.identity.age",
                   directory / f"{teacher_id}.card.json")


def new_teacher_keys(directory: Path, teacher_id: str, name: str, passphrase: str,
                     overwrite: bool = False, security_key: CtapDevice | None = None,
                     security_key_pin: str = "") -> tuple[TeacherCard, TeacherKeyFiles]:
    """Generate a teacher's signing key and encryption identity, and their signed card; with
    `security_key`, also a credential on it (see `enrol_security_key`), named in the card.
    Nothing is written unless all of it worked."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise KeyFileError(f"passphrase must be at least {MIN_PASSPHRASE} characters")
    files = TeacherKeyFiles.in_dir(directory, teacher_id)
    existing = [p for p in (files.signing_key, files.identity, files.card) if p.exists()]
    if existing and not overwrite:
        raise KeyFileError(f"{existing[0]} exists; refusing to overwrite a teacher's key")
    credential = None
    if security_key is not None:
        try:
            credential = enrol_security_key(security_key, teacher_id, name, security_key_pin)
        except SecurityKeyError as e:
            raise KeyFileError(f"security key: {e.reason}") from None
    signing_key = Ed25519PrivateKey.generate()
    identity = pyrage.x25519.Identity.generate()
    card, card_bytes = TeacherCard.create(teacher_id, name, signing_key,
                                          str(identity.to_public()), credential)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(files.signing_key, seal_signing_key(signing_key, passphrase), mode=0o600)
    atomic_write(files.identity, pyrage.passphrase.encrypt(str(identity).encode(), passphrase),
                 mode=0o600)
    atomic_write(files.card, card_bytes)
    return card, files


def enrol_security_key(device: CtapDevice, teacher_id: str, name: str,
                       pin: str) -> SecurityKeyCredential:
    """Make a (non-resident) ES256 or EdDSA credential for the relying party `classcam` on the
    security key `device`, with its PIN and a touch; `SecurityKeyError` says why not. The key
    must have a PIN: the unit accepts only assertions the key verified the PIN for."""
    # fido2.ctap2 imports the USB HID backend of the platform it runs on: import on use.
    from fido2.ctap2.base import Ctap2
    from fido2.ctap2.pin import ClientPin
    try:
        ctap = Ctap2(device)
        if not ctap.info.options.get("clientPin"):
            raise SecurityKeyError("the security key has no PIN: set one first (with its "
                                   "maker's tool, or `ykman fido access change-pin`)")
        client_pin = ClientPin(ctap)
        try:
            token = client_pin.get_pin_token(pin, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        except CtapError as e:
            raise SecurityKeyError(ctap_reason(e.code, client_pin)) from None
        # No attestation is checked, so the client data need only be unpredictable.
        data_hash = hashlib.sha256(b"classcam enrolment\n" + os.urandom(32)).digest()
        made = ctap.make_credential(
            data_hash, {"id": RP_ID, "name": "classcam"},
            {"id": teacher_id.encode(), "name": teacher_id, "displayName": name},
            [{"type": "public-key", "alg": ES256.ALGORITHM},
             {"type": "public-key", "alg": EdDSA.ALGORITHM}],
            pin_uv_param=client_pin.protocol.authenticate(token, data_hash),
            pin_uv_protocol=client_pin.protocol.VERSION)
    except CtapError as e:
        raise SecurityKeyError(ctap_reason(e.code)) from None
    except OSError:
        raise SecurityKeyError("no security key") from None
    except ValueError as e:  # fido2: not a CTAP2 key, no common PIN protocol
        raise SecurityKeyError(f"this security key cannot be used: {e}") from None
    attested = made.auth_data.credential_data
    if attested is None:
        raise SecurityKeyError("the security key made no credential")
    return SecurityKeyCredential(attested.credential_id, attested.public_key)


def security_keys() -> list[CtapDevice]:
    """The FIDO security keys plugged into this computer (USB HID)."""
    from fido2.hid import CtapHidDevice  # its backend is per platform: import on use
    return list(CtapHidDevice.list_devices())


def seal_signing_key(key: Ed25519PrivateKey, secret: str,
                     log2_n: int = SCRYPT_LOG2_N) -> bytes:
    """The key's PKCS#8 DER, encrypted under `secret` (a passphrase or a PIN pad's PIN): a key
    from scrypt (N = 2^log2_n, r = 8, p = 1, a random 16-byte salt) seals it with
    ChaCha20-Poly1305, the header lines as associated data (see the module docstring)."""
    if not MIN_SCRYPT_LOG2_N <= log2_n <= MAX_SCRYPT_LOG2_N:
        raise ValueError(f"log2 N must be {MIN_SCRYPT_LOG2_N} to {MAX_SCRYPT_LOG2_N}")
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(16), os.urandom(12)
    header = (f"{SEALED_MAGIC}\nscrypt {b64(salt)} {log2_n} {SCRYPT_R} {SCRYPT_P}\n"
              f"chacha20poly1305 {b64(nonce)}\n").encode()
    sealed = ChaCha20Poly1305(_scrypt_key(secret, salt, log2_n)).encrypt(nonce, der, header)
    return header + b64(sealed).encode() + b"\n"


def scrypt_work_factor(sealed: bytes) -> int:
    """log2 N of a key sealed by `seal_signing_key`; ValueError if it is not one."""
    return _parse_sealed(sealed)[1]


def load_signing_key(path: Path, secret: str) -> Ed25519PrivateKey:
    """Unseal a signing key written by `seal_signing_key`, or by its older form (PKCS#8 PEM
    with 2,048-iteration PBKDF2: it loads, with a note on stderr to re-seal it)."""
    data = path.read_bytes()
    try:
        if data.startswith(SEALED_MAGIC.encode() + b"\n"):
            header, log2_n, salt, nonce, sealed = _parse_sealed(data)
            der = ChaCha20Poly1305(_scrypt_key(secret, salt, log2_n)).decrypt(nonce, sealed,
                                                                             header)
            key = serialization.load_der_private_key(der, None)
        else:
            key = serialization.load_pem_private_key(data, secret.encode())
    except (ValueError, TypeError, InvalidTag):
        raise KeyFileError(f"{path}: wrong passphrase or not a classcam signing key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    if data.startswith(_PKCS8_PBKDF2):
        print(f"classcam: note: {path} is sealed with 2,048-iteration PBKDF2, which is quick to "
              f"search; re-seal it with scrypt: classcam keys reseal --key {path}",
              file=sys.stderr)
    return key


def reseal_signing_key(path: Path, passphrase: str) -> None:
    """Seal the signing key at `path` again, in today's form (`seal_signing_key`)."""
    key = load_signing_key(path, passphrase)
    atomic_write(path, seal_signing_key(key, passphrase), mode=0o600)


_SEALED = re.compile(
    rb"(classcam-sealed-key/v1\nscrypt ([A-Za-z0-9_-]{22}) ([0-9]{1,2}) 8 1\n"
    rb"chacha20poly1305 ([A-Za-z0-9_-]{16})\n)([A-Za-z0-9_-]{40,400})\n")


def _parse_sealed(data: bytes) -> tuple[bytes, int, bytes, bytes, bytes]:
    """(header, log2 N, salt, nonce, ciphertext) of a sealed key; ValueError if it is not one
    with parameters this code accepts."""
    match = _SEALED.fullmatch(data)
    if match is None:
        raise ValueError("not a classcam sealed key")
    header, salt, log2_n, nonce, sealed = match.groups()
    if not MIN_SCRYPT_LOG2_N <= int(log2_n) <= MAX_SCRYPT_LOG2_N:
        raise ValueError(f"scrypt log2 N {int(log2_n)} is out of range")
    return (header, int(log2_n), unb64(salt.decode()), unb64(nonce.decode()),
            unb64(sealed.decode()))


def _scrypt_key(secret: str, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=SCRYPT_R, p=SCRYPT_P).derive(
        secret.encode())


def load_identity(path: Path, passphrase: str) -> pyrage.x25519.Identity:
    """Unlock the teacher's age identity (for `classcam decrypt`)."""
    data = path.read_bytes()
    try:
        text = pyrage.passphrase.decrypt(data, passphrase).decode()
    except Exception:
        # An identity may also be kept unencrypted by the teacher, as age-keygen writes it.
        text = data.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("AGE-SECRET-KEY-"):
            return pyrage.x25519.Identity.from_str(line.strip())
    raise KeyFileError(f"{path}: wrong passphrase or not an age identity")


def read_passphrase(file: Path | None, prompt: str = "Passphrase: ", confirm: bool = False) -> str:
    """The passphrase from a file, from $CLASSCAM_PASSPHRASE, or asked for on the terminal."""
    if file is not None:
        return file.read_text(encoding="utf-8").rstrip("\n")
    if "CLASSCAM_PASSPHRASE" in os.environ:
        return os.environ["CLASSCAM_PASSPHRASE"]
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Again: ") != first:
        raise KeyFileError("the passphrases differ")
    return first
