"""The pad's side of a security-key start: the teacher's FIDO2 key, with the PIN they type on the
keypad, signs the unit's challenge (DESIGN.md section 4, "Start token from a security key").

Everything CTAP goes through python-fido2's own classes (`Ctap2`, `ClientPin`): the PIN goes to
the key, which checks it and counts wrong tries itself; the pad never holds a key that could be
searched offline.

    device = first_device()                                  # a USB security key, or raises
    msg = assertion_message(device, card, pin, challenge, "start")
    # -> {"type": "assertion", "assertion": {...}}, sent to the unit over the pad link
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

from fido2.ctap import CtapDevice, CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin

from formats.assertion import (ACTIONS, NO_CREDENTIAL, RP_ID, Assertion, SecurityKeyError,
                               client_data, client_data_hash, ctap_reason)
from formats.card import TeacherCard
from formats.ids import is_device_id

__all__ = ["NO_CREDENTIAL", "SecurityKeyError", "assertion_message", "first_device",
           "list_devices"]

TOUCH_TIMEOUT_S = 30.0


def list_devices() -> list[CtapDevice]:
    """The FIDO security keys plugged into this machine (USB HID)."""
    from fido2.hid import CtapHidDevice  # the HID backend is per platform: import on use
    return list(CtapHidDevice.list_devices())


def first_device(devices: Iterable[CtapDevice] | None = None) -> CtapDevice:
    """The first security key in `devices` (default: those plugged in), or `SecurityKeyError`
    "no security key"."""
    for device in list_devices() if devices is None else devices:
        return device
    raise SecurityKeyError("no security key")


def assertion_message(device: CtapDevice, card: TeacherCard, pin: str, challenge: dict,
                      action: str, timeout_s: float = TOUCH_TIMEOUT_S) -> dict:
    """The pad link message `{"type": "assertion", "assertion": {...}}` for the unit's
    `challenge` message, signed by the credential on `card` on the security key `device`,
    with `pin` checked by the key and a touch of the key (user presence) required.

    Raises `SecurityKeyError`: "wrong PIN, N tries left", "security key locked", NO_CREDENTIAL,
    "security key not touched", "no security key", ..."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}")
    if not isinstance(challenge, dict) or challenge.get("type") != "challenge" \
            or not is_device_id(challenge.get("device")) \
            or not isinstance(challenge.get("nonce"), str):
        raise SecurityKeyError("no challenge from the unit: press record first")
    credential = card.security_key
    if credential is None:
        raise SecurityKeyError("this teacher's card names no security key")
    data = client_data(card.teacher_id, challenge["device"], challenge["nonce"], action,
                       card.recipient)
    data_hash = client_data_hash(data)
    cancel = threading.Event()
    timer = threading.Timer(timeout_s, cancel.set)  # a key nobody touches gives up here
    timer.start()
    try:
        ctap = Ctap2(device)
        client_pin = ClientPin(ctap)
        response = _assert(ctap, client_pin, pin, credential.credential_id, data_hash, cancel)
    except OSError:
        raise SecurityKeyError("no security key") from None
    except ValueError as e:  # fido2: not a CTAP2 key, no PIN support, no common PIN protocol
        raise SecurityKeyError(f"this security key cannot be used: {e}") from None
    finally:
        timer.cancel()
    if response.credential.get("id") != credential.credential_id:
        raise SecurityKeyError(NO_CREDENTIAL)
    return Assertion(card.teacher_id, credential.credential_id, bytes(response.auth_data), data,
                     response.signature).message()


def _assert(ctap: Ctap2, client_pin: ClientPin, pin: str, credential_id: bytes,
            data_hash: bytes, cancel: threading.Event):
    try:
        token = client_pin.get_pin_token(pin, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    except CtapError as e:
        raise SecurityKeyError(ctap_reason(e.code, client_pin)) from None
    try:
        return ctap.get_assertion(
            RP_ID, data_hash, allow_list=[{"type": "public-key", "id": credential_id}],
            options={"up": True},
            pin_uv_param=client_pin.protocol.authenticate(token, data_hash),
            pin_uv_protocol=client_pin.protocol.VERSION, event=cancel)
    except CtapError as e:
        raise SecurityKeyError(ctap_reason(e.code)) from None
