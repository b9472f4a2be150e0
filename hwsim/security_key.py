"""A simulated FIDO2 security key behind python-fido2's own device interface.

This is a SIMULATOR: it implements the *authenticator* side of CTAP2 (which the real code never
does: the pad and the teacher's tools only ever talk to a key through python-fido2's client
classes), so that the pad, enrolment and the unit's verification run unchanged against it. Its
private keys and PIN hash sit in a plain JSON state file; a real key never lets them out.

What it does, as a CTAP2.1 key does:
* authenticatorGetInfo, MakeCredential (ES256 or EdDSA, resident or not), GetAssertion
  (allow list or resident credentials), ClientPIN (set PIN, key agreement, PIN retries, PIN
  tokens by the legacy and the permissions subcommands) with PIN/UV protocol 2 and/or 1, the
  platform's pick (fido2's own PinProtocolV1/V2 classes do the key agreement and ciphers);
* a PIN retry counter of 8 kept in the state file: each wrong PIN takes one; 3 wrong in a row
  need a power cycle (`power_cycle()`, or a new `SimSecurityKey` from the state file); at 0 the
  key is locked for good (PIN_BLOCKED), and stays locked when re-created from its state;
* one signature counter for the whole key (or always 0 with `counter=False`, as some keys do);
* user presence the test controls: `key.touch = False` and an operation that needs a touch fails
  with USER_ACTION_TIMEOUT, as a key nobody touches does.

    key = SimSecurityKey(tmp / "key.json", pin="123456")
    ctap = Ctap2(key)                      # fido2.ctap2.Ctap2: the real client
    key.touch = False                      # nobody touches it
    SimSecurityKey(tmp / "key.json")       # the same key after a power cycle
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fido2 import cbor
from fido2.cose import ES256, CoseKey, EdDSA
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocol, PinProtocolV1, PinProtocolV2
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import AttestedCredentialData, AuthenticatorData

from formats.durable import atomic_write
from formats.keytext import b64, unb64

MAX_PIN_RETRIES = 8
MAX_WRONG_PER_POWER_CYCLE = 3
ERR = CtapError.ERR
FLAG = AuthenticatorData.FLAG
_PROTOCOLS: dict[int, type[PinProtocol]] = {2: PinProtocolV2, 1: PinProtocolV1}
_ALGORITHMS = {ES256.ALGORITHM: "ES256", EdDSA.ALGORITHM: "EdDSA"}
_Private = ec.EllipticCurvePrivateKey | Ed25519PrivateKey


@dataclass
class _State:
    """What the key keeps across power cycles (the state file)."""

    aaguid: bytes
    pin_hash: bytes | None = None          # LEFT(SHA-256(PIN), 16), as CTAP2 stores it
    pin_retries: int = MAX_PIN_RETRIES
    counter: int = 0
    credentials: dict[bytes, dict[str, Any]] = field(default_factory=dict)


class SimSecurityKey(CtapDevice):
    """A simulated CTAP2 authenticator (see the module docstring): a `fido2.ctap.CtapDevice`
    whose `call` answers CTAPHID CBOR requests."""

    plugged: list[SimSecurityKey] = []  # what `list_devices` finds, as a USB bus would

    def __init__(self, state_file: Path, pin: str | None = None,
                 algorithms: tuple[int, ...] = (ES256.ALGORITHM, EdDSA.ALGORITHM),
                 pin_protocols: tuple[int, ...] = (2, 1), counter: bool = True):
        self.state_file = state_file
        self.touch = True  # whether the user touches the key when it asks
        self.touches = 0   # how many times it asked for a touch
        self._algorithms = algorithms
        self._pin_protocols = pin_protocols
        self._counting = counter
        self._state = _load(state_file) if state_file.exists() else _State(os.urandom(16))
        self.power_cycle()
        if pin is not None and self._state.pin_hash is None:
            self._state.pin_hash = _pin_hash(pin)
        self._save()

    # -- the CtapDevice interface --------------------------------------------------------------

    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR

    def call(self, cmd: int, data: bytes = b"", event: Event | None = None,
             on_keepalive: Callable[[STATUS], None] | None = None) -> bytes:
        """Answer one CTAPHID message: for CBOR, a status byte and the CBOR response."""
        if cmd != CTAPHID.CBOR or not data:
            raise CtapError(ERR.INVALID_COMMAND)
        handlers: dict[int, Callable[[dict], dict | None]] = {
            Ctap2.CMD.GET_INFO: self._get_info,
            Ctap2.CMD.MAKE_CREDENTIAL: self._make_credential,
            Ctap2.CMD.GET_ASSERTION: self._get_assertion,
            Ctap2.CMD.CLIENT_PIN: self._client_pin,
        }
        handler = handlers.get(data[0])
        if handler is None:
            return bytes([ERR.INVALID_COMMAND])
        self._on_keepalive = on_keepalive
        try:
            params = cbor.decode(data[1:]) if len(data) > 1 else {}
            if not isinstance(params, dict):
                raise CtapError(ERR.INVALID_CBOR)
            response = handler(params)
        except CtapError as e:
            return bytes([e.code])
        except (ValueError, TypeError, KeyError, IndexError):
            return bytes([ERR.INVALID_PARAMETER])
        return b"\0" + (cbor.encode(response) if response else b"")

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        """The simulated keys that are plugged in (`SimSecurityKey.plugged`)."""
        return iter(list(cls.plugged))

    # -- what a test does to the key -----------------------------------------------------------

    def power_cycle(self) -> None:
        """Unplug and plug in again: a new key agreement key and PIN token, and the count of
        wrong PINs in a row starts again (the retry counter does not)."""
        self._key_agreement = ec.generate_private_key(ec.SECP256R1())
        self._pin_token = os.urandom(32)
        self._token_permissions = 0
        self._token_rp_id: str | None = None
        self._wrong_in_a_row = 0

    @property
    def pin_retries(self) -> int:
        return self._state.pin_retries

    @property
    def counter(self) -> int:
        return self._state.counter

    # -- authenticatorGetInfo ------------------------------------------------------------------

    def _get_info(self, params: dict) -> dict:
        return {1: ["FIDO_2_0", "FIDO_2_1"], 3: self._state.aaguid,
                4: {"rk": True, "up": True, "plat": False,
                    "clientPin": self._state.pin_hash is not None, "pinUvAuthToken": True},
                5: 1200, 6: list(self._pin_protocols),
                10: [{"type": "public-key", "alg": a} for a in self._algorithms]}

    # -- authenticatorMakeCredential -----------------------------------------------------------

    def _make_credential(self, params: dict) -> dict:
        client_data_hash, rp, user, key_params = params[1], params[2], params[3], params[4]
        options = params.get(7, {})
        if options.get("uv"):
            raise CtapError(ERR.INVALID_OPTION)  # no built-in user verification
        verified = self._check_pin_auth(params.get(8), params.get(9), client_data_hash,
                                        ClientPin.PERMISSION.MAKE_CREDENTIAL, rp["id"])
        if not verified and self._state.pin_hash is not None:
            raise CtapError(ERR.PUAT_REQUIRED)
        alg = next((p["alg"] for p in key_params
                    if p.get("type") == "public-key" and p.get("alg") in self._algorithms), None)
        if alg is None:
            raise CtapError(ERR.UNSUPPORTED_ALGORITHM)
        self._wait_for_touch()
        for excluded in params.get(5) or []:
            if self._state.credentials.get(excluded["id"], {}).get("rp_id") == rp["id"]:
                raise CtapError(ERR.CREDENTIAL_EXCLUDED)
        private: _Private = (ec.generate_private_key(ec.SECP256R1())
                             if alg == ES256.ALGORITHM else Ed25519PrivateKey.generate())
        credential_id = os.urandom(32)
        self._state.credentials[credential_id] = {
            "rp_id": rp["id"], "user": dict(user), "resident": bool(options.get("rk")),
            "key": private.private_bytes(serialization.Encoding.DER,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())}
        public = CoseKey.for_alg(alg).from_cryptography_key(private.public_key())
        flags = FLAG.UP | FLAG.AT | (FLAG.UV if verified else 0)
        auth_data = AuthenticatorData.create(
            _sha256(rp["id"].encode()), flags, self._next_counter(),
            AttestedCredentialData.create(self._state.aaguid, credential_id, public))
        self._save()
        return {1: "none", 2: bytes(auth_data), 3: {}}

    # -- authenticatorGetAssertion -------------------------------------------------------------

    def _get_assertion(self, params: dict) -> dict:
        rp_id, client_data_hash = params[1], params[2]
        options = params.get(5, {})
        if options.get("uv"):
            raise CtapError(ERR.INVALID_OPTION)
        verified = self._check_pin_auth(params.get(6), params.get(7), client_data_hash,
                                        ClientPin.PERMISSION.GET_ASSERTION, rp_id)
        allow = params.get(3)
        if allow:
            found = [d["id"] for d in allow
                     if self._state.credentials.get(d["id"], {}).get("rp_id") == rp_id]
        else:
            found = [i for i, c in self._state.credentials.items()
                     if c["rp_id"] == rp_id and c["resident"]]
        present = options.get("up", True)
        if present:
            self._wait_for_touch()
        if not found:
            raise CtapError(ERR.NO_CREDENTIALS)
        credential_id = found[0]
        credential = self._state.credentials[credential_id]
        flags = (FLAG.UP if present else 0) | (FLAG.UV if verified else 0)
        auth_data = AuthenticatorData.create(_sha256(rp_id.encode()), FLAG(flags),
                                             self._next_counter())
        signature = _sign(credential["key"], bytes(auth_data) + client_data_hash)
        self._save()
        response = {1: {"type": "public-key", "id": credential_id}, 2: bytes(auth_data),
                    3: signature}
        if credential["resident"]:
            response[4] = {"id": credential["user"]["id"]}
        return response

    # -- authenticatorClientPIN ----------------------------------------------------------------

    def _client_pin(self, params: dict) -> dict | None:
        version, sub = params[1], params[2]
        if version not in self._pin_protocols:
            raise CtapError(ERR.INVALID_PARAMETER)
        protocol = _PROTOCOLS[version]()
        if sub == ClientPin.CMD.GET_PIN_RETRIES:
            return {3: self._state.pin_retries,
                    4: self._wrong_in_a_row >= MAX_WRONG_PER_POWER_CYCLE}
        if sub == ClientPin.CMD.GET_KEY_AGREEMENT:
            public = dict(ES256.from_cryptography_key(self._key_agreement.public_key()))
            public[3] = -25  # ECDH-ES+HKDF-256, as the specification says to name it
            return {1: public}
        shared = self._shared_secret(protocol, params[3])
        if sub == ClientPin.CMD.SET_PIN:
            self._set_pin(protocol, shared, params[4], params[5])
            return None
        if sub in (ClientPin.CMD.GET_TOKEN_USING_PIN_LEGACY, ClientPin.CMD.GET_TOKEN_USING_PIN):
            legacy = sub == ClientPin.CMD.GET_TOKEN_USING_PIN_LEGACY
            if not legacy and not params.get(9):
                raise CtapError(ERR.MISSING_PARAMETER)
            permissions = (ClientPin.PERMISSION.MAKE_CREDENTIAL
                           | ClientPin.PERMISSION.GET_ASSERTION) if legacy else params[9]
            return self._get_pin_token(protocol, shared, params[6], permissions,
                                       None if legacy else params.get(10))
        raise CtapError(ERR.INVALID_SUBCOMMAND)

    def _set_pin(self, protocol: PinProtocol, shared: bytes, auth: bytes,
                 new_pin_enc: bytes) -> None:
        if self._state.pin_hash is not None:
            raise CtapError(ERR.NOT_ALLOWED)
        if not hmac.compare_digest(protocol.authenticate(shared, new_pin_enc), auth):
            raise CtapError(ERR.PIN_AUTH_INVALID)
        pin = protocol.decrypt(shared, new_pin_enc).rstrip(b"\0")
        if len(pin) < 4:
            raise CtapError(ERR.PIN_POLICY_VIOLATION)
        self._state.pin_hash = _sha256(pin)[:16]
        self._state.pin_retries = MAX_PIN_RETRIES
        self._save()

    def _get_pin_token(self, protocol: PinProtocol, shared: bytes, pin_hash_enc: bytes,
                       permissions: int, rp_id: str | None) -> dict:
        if self._state.pin_hash is None:
            raise CtapError(ERR.PIN_NOT_SET)
        if self._state.pin_retries <= 0:
            raise CtapError(ERR.PIN_BLOCKED)
        if self._wrong_in_a_row >= MAX_WRONG_PER_POWER_CYCLE:
            raise CtapError(ERR.PIN_AUTH_BLOCKED)
        self._state.pin_retries -= 1  # taken before the comparison, as the specification says
        self._save()
        if not hmac.compare_digest(protocol.decrypt(shared, pin_hash_enc),
                                   self._state.pin_hash):
            self._key_agreement = ec.generate_private_key(ec.SECP256R1())
            self._wrong_in_a_row += 1
            if self._state.pin_retries <= 0:
                raise CtapError(ERR.PIN_BLOCKED)
            if self._wrong_in_a_row >= MAX_WRONG_PER_POWER_CYCLE:
                raise CtapError(ERR.PIN_AUTH_BLOCKED)
            raise CtapError(ERR.PIN_INVALID)
        self._state.pin_retries = MAX_PIN_RETRIES
        self._wrong_in_a_row = 0
        self._save()
        self._pin_token = os.urandom(32)
        self._token_permissions = permissions
        self._token_rp_id = rp_id
        return {2: protocol.encrypt(shared, self._pin_token)}

    # -- helpers -------------------------------------------------------------------------------

    def _shared_secret(self, protocol: PinProtocol, platform_key: dict) -> bytes:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + platform_key[-2] + platform_key[-3])
        z = self._key_agreement.exchange(ec.ECDH(), peer)
        assert isinstance(protocol, PinProtocolV1)  # V2 is a subclass; both have kdf
        return protocol.kdf(z)

    def _check_pin_auth(self, auth: bytes | None, version: int | None, client_data_hash: bytes,
                        permission: int, rp_id: str) -> bool:
        """True if a pinUvAuthParam is given and good; CtapError if it is given and bad."""
        if auth is None:
            return False
        if version not in self._pin_protocols:
            raise CtapError(ERR.MISSING_PARAMETER if version is None else ERR.INVALID_PARAMETER)
        expected = _PROTOCOLS[version]().authenticate(self._pin_token, client_data_hash)
        if not hmac.compare_digest(expected, auth):
            raise CtapError(ERR.PIN_AUTH_INVALID)
        if not self._token_permissions & permission or \
                self._token_rp_id not in (None, rp_id):
            raise CtapError(ERR.PIN_AUTH_INVALID)
        self._token_rp_id = rp_id
        return True

    def _wait_for_touch(self) -> None:
        self.touches += 1
        if self._on_keepalive is not None:
            self._on_keepalive(STATUS.UPNEEDED)
        if not self.touch:
            raise CtapError(ERR.USER_ACTION_TIMEOUT)

    def _next_counter(self) -> int:
        if not self._counting:
            return 0
        self._state.counter += 1
        return self._state.counter

    def _save(self) -> None:
        s = self._state
        doc = {"aaguid": s.aaguid.hex(), "pin_hash": None if s.pin_hash is None else s.pin_hash.hex(),
               "pin_retries": s.pin_retries, "counter": s.counter,
               "credentials": {b64(i): {**c, "key": b64(c["key"]),
                                        "user": {**c["user"], "id": b64(c["user"]["id"])}}
                               for i, c in s.credentials.items()}}
        atomic_write(self.state_file, json.dumps(doc, indent=1).encode(), mode=0o600)

    _on_keepalive: Callable[[STATUS], None] | None = None


def _load(path: Path) -> _State:
    doc = json.loads(path.read_bytes())
    return _State(
        aaguid=bytes.fromhex(doc["aaguid"]),
        pin_hash=None if doc["pin_hash"] is None else bytes.fromhex(doc["pin_hash"]),
        pin_retries=doc["pin_retries"], counter=doc["counter"],
        credentials={unb64(i): {**c, "key": unb64(c["key"]),
                                "user": {**c["user"], "id": unb64(c["user"]["id"])}}
                     for i, c in doc["credentials"].items()})


def _sign(der: bytes, message: bytes) -> bytes:
    private = serialization.load_der_private_key(der, None)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(message, ec.ECDSA(hashes.SHA256()))
    assert isinstance(private, Ed25519PrivateKey)
    return private.sign(message)


def _pin_hash(pin: str) -> bytes:
    return _sha256(pin.encode())[:16]


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()



