"""The simulated security key (hwsim/security_key.py) driven through python-fido2's real client
classes, and the pad's side of a security-key start (pinpad/security_key.py): the PIN is checked
by the key, which counts wrong tries; a key locked by wrong PINs stays locked, also when
re-created from its saved state (a power cycle); a key nobody touches signs nothing."""
from __future__ import annotations

import hashlib

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.webauthn import AuthenticatorData

from formats.assertion import RP_ID_HASH, client_data_hash, parse_client_data, parse_message
from formats.card import SecurityKeyCredential, TeacherCard
from hwsim.security_key import MAX_PIN_RETRIES, SimSecurityKey
from pinpad.security_key import NO_CREDENTIAL, SecurityKeyError, assertion_message, first_device

PIN = "246810"
CHALLENGE = {"type": "challenge", "device": "unit-1", "nonce": "n-1", "expires_in": 60}


def enrolled(key: SimSecurityKey, teacher_id: str = "t-evans", alg: int = -7) -> TeacherCard:
    """A card for a credential made on `key` through fido2's Ctap2 and ClientPin."""
    ctap = Ctap2(key)
    pin = ClientPin(ctap)
    token = pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "classcam")
    data_hash = hashlib.sha256(b"enrol").digest()
    made = ctap.make_credential(
        data_hash, {"id": "classcam", "name": "classcam"},
        {"id": teacher_id.encode(), "name": teacher_id}, [{"type": "public-key", "alg": alg}],
        pin_uv_param=pin.protocol.authenticate(token, data_hash),
        pin_uv_protocol=pin.protocol.VERSION)
    attested = made.auth_data.credential_data
    assert attested is not None
    _, data = TeacherCard.create(
        teacher_id, "Ms Evans", Ed25519PrivateKey.generate(),
        str(pyrage.x25519.Identity.generate().to_public()),
        SecurityKeyCredential(attested.credential_id, attested.public_key))
    return TeacherCard.parse(data)


def refusal(key: SimSecurityKey, card: TeacherCard, pin: str) -> str:
    with pytest.raises(SecurityKeyError) as e:
        assertion_message(key, card, pin, CHALLENGE, "start")
    return e.value.reason


@pytest.mark.parametrize("protocols", [(2,), (1,)], ids=["pin-protocol-2", "pin-protocol-1"])
@pytest.mark.parametrize("alg", [-7, -8], ids=["ES256", "EdDSA"])
def test_an_assertion_binds_the_challenge_and_verifies_with_the_cards_key(tmp_path, protocols,
                                                                           alg):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN, pin_protocols=protocols)
    card = enrolled(key, alg=alg)
    msg = assertion_message(key, card, PIN, CHALLENGE, "discard")
    assert set(msg) == {"type", "assertion"} and msg["type"] == "assertion"
    assertion = parse_message(msg["assertion"])
    fields = parse_client_data(assertion.client_data)
    assert (fields.teacher_id, fields.device_id, fields.nonce, fields.action, fields.recipient) \
        == ("t-evans", "unit-1", "n-1", "discard", card.recipient)
    auth = AuthenticatorData(assertion.authenticator_data)
    assert auth.rp_id_hash == RP_ID_HASH
    assert auth.is_user_present() and auth.is_user_verified()
    assert card.security_key is not None
    card.security_key.public_key.verify(
        assertion.authenticator_data + client_data_hash(assertion.client_data),
        assertion.signature)


def test_a_wrong_pin_says_how_many_tries_are_left_and_the_right_one_resets_them(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrolled(key)
    assert refusal(key, card, "000000") == f"wrong PIN, {MAX_PIN_RETRIES - 1} tries left"
    assert refusal(key, card, "000000") == f"wrong PIN, {MAX_PIN_RETRIES - 2} tries left"
    assertion_message(key, card, PIN, CHALLENGE, "start")
    assert key.pin_retries == MAX_PIN_RETRIES


def test_three_wrong_pins_in_a_row_need_a_power_cycle(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrolled(key)
    for _ in range(2):
        refusal(key, card, "000000")
    assert "unplug the security key" in refusal(key, card, "000000")
    # Even the right PIN is not tried until the key is unplugged: no fourth guess.
    assert "unplug the security key" in refusal(key, card, PIN)
    assert key.pin_retries == MAX_PIN_RETRIES - 3
    key.power_cycle()
    assertion_message(key, card, PIN, CHALLENGE, "start")


def test_a_key_locked_by_wrong_pins_stays_locked_across_power_cycles(tmp_path):
    state = tmp_path / "key.json"
    key = SimSecurityKey(state, pin=PIN)
    card = enrolled(key)
    reasons = []
    for _ in range(MAX_PIN_RETRIES):
        reasons.append(refusal(key, card, "000000"))
        if "unplug" in reasons[-1]:
            key = SimSecurityKey(state)  # unplugged and plugged in: re-created from its state
    assert reasons[-1] == "security key locked"
    assert [r for r in reasons if r.startswith("wrong PIN,")][-1] == "wrong PIN, 1 try left"
    for _ in range(2):  # the right PIN, after a power cycle, and again
        key = SimSecurityKey(state)
        assert key.pin_retries == 0
        assert refusal(key, card, PIN) == "security key locked"
        with pytest.raises(CtapError) as e:
            ClientPin(Ctap2(key)).get_pin_token(PIN)
        assert e.value.code == CtapError.ERR.PIN_BLOCKED


def test_a_key_nobody_touches_signs_nothing(tmp_path):
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrolled(key)
    counter = key.counter
    key.touch = False
    assert refusal(key, card, PIN) == "security key not touched"
    assert key.counter == counter and key.touches >= 1


def test_another_key_has_no_credential_for_the_teacher(tmp_path):
    card = enrolled(SimSecurityKey(tmp_path / "key.json", pin=PIN))
    other = SimSecurityKey(tmp_path / "other.json", pin=PIN)
    assert refusal(other, card, PIN) == NO_CREDENTIAL


def test_no_security_key_plugged_in(tmp_path):
    with pytest.raises(SecurityKeyError) as e:
        first_device([])
    assert e.value.reason == "no security key"
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    assert first_device([key]) is key


def test_the_pad_asks_the_key_with_user_presence_and_the_pin_token(tmp_path):
    # What reaches the key: getAssertion for rp "classcam" with up=true and a pinUvAuthParam.
    seen: list[bytes] = []

    class Recording(SimSecurityKey):
        def call(self, cmd, data=b"", event=None, on_keepalive=None):
            seen.append(bytes(data))
            return super().call(cmd, data, event, on_keepalive)

    key = Recording(tmp_path / "key.json", pin=PIN)
    card = enrolled(key)
    seen.clear()
    assertion_message(key, card, PIN, CHALLENGE, "start")
    from fido2 import cbor
    (request,) = [cbor.decode(d[1:]) for d in seen if d[0] == Ctap2.CMD.GET_ASSERTION]
    assert isinstance(request, dict)
    assert request[1] == "classcam" and request[5] == {"up": True} and request[6] and request[7]


def test_the_pad_and_the_units_assertion_check_never_import_the_simulator():
    from tests.test_import_graph import ROOT, imports
    files = [*sorted((ROOT / "pinpad").rglob("*.py")), ROOT / "appliance" / "assertion.py",
             ROOT / "formats" / "assertion.py"]
    assert len(files) >= 4
    assert [f"{p.name} imports {m}" for p in files for m in imports(p)
            if m.split(".")[0] == "hwsim"] == []
