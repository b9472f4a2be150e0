"""The pad service (pinpad/service.py) on a simulated keypad that yields real evdev events,
against a stand-in unit on a real Unix socket; and through the real daemon in the lab."""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import jwt
import pytest
from evdev import InputEvent, ecodes

from hwsim.keypad import SimPad
from pinpad.keypad import Key, key_of, open_keypad
from pinpad.keystore import MAX_WRONG_PINS
from pinpad.service import Timing

DEVICE = "sim-unit-1"


class FakeUnit:
    """The unit's end of the link: sends a challenge when armed, answers tokens `ok`."""

    def __init__(self, path):
        self.path = path
        self.received: list[dict] = []
        self.armed = False
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _client(self, reader, writer) -> None:
        self._writers.append(writer)
        if self.armed:
            self._challenge(writer)
        while line := await reader.readline():
            msg = json.loads(line)
            self.received.append(msg)
            if msg["type"] == "arm":
                self.armed = True
                for w in self._writers:
                    self._challenge(w)
            elif msg["type"] == "stop":
                writer.write(b'{"type":"result","ok":true,"reason":"stopped"}\n')
            else:
                writer.write(b'{"type":"result","ok":true,"reason":"recording"}\n')

    def _challenge(self, writer) -> None:
        writer.write(json.dumps({"type": "challenge", "device": DEVICE, "nonce": "n-1",
                                 "expires_in": 60}).encode() + b"\n")

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.received]


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def pad_world(lab_template, short_dir):
    """A keystore with the lab's teachers on it (t-evans is 1, t-jones is 2), and a socket."""
    lab = lab_template.copy(short_dir)
    return lab.pad_dir, short_dir / "unit.sock", lab


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_number_and_pin_typed_on_the_keypad_send_a_token_for_the_challenge(pad_world):
    keystore, sock, lab = pad_world

    async def go():
        unit = FakeUnit(sock)
        await unit.start()
        pad = SimPad(keystore, sock)
        task = asyncio.create_task(pad.run())
        await pad.press_record()
        await _until(lambda: unit.armed)
        result = await pad.enter("t-jones", "987654")
        assert pad.keypad.grabbed, "the keypad is held exclusively while the service reads it"
        task.cancel()
        return unit, result

    unit, result = _run(go())
    assert result == {"type": "result", "ok": True, "reason": "recording"}
    assert unit.kinds() == ["arm", "token"]
    token = unit.received[1]["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["nonce"], claims["act"]) == (
        "t-jones", DEVICE, "n-1", "start")
    assert jwt.get_unverified_header(token)["kid"] == "t-jones"


def test_held_keys_and_releases_type_nothing():
    press, repeat, release = (InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_KP5, v) for v in (1, 2, 0))
    assert key_of(press) == "5"
    assert key_of(repeat) is None and key_of(release) is None
    assert key_of(InputEvent(0, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)) is None
    assert key_of(InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_KPMINUS, 1)) is Key.STOP
    assert key_of(InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_A, 1)) is None


def test_a_held_digit_is_one_digit(pad_world):
    # Auto-repeat (value 2) must not lengthen the PIN: 98765 with the 4 held down is 987654.
    keystore, sock, _ = pad_world

    async def go():
        unit = FakeUnit(sock)
        unit.armed = True
        await unit.start()
        pad = SimPad(keystore, sock)
        task = asyncio.create_task(pad.run())
        kp = [getattr(ecodes, f"KEY_KP{d}") for d in "2"] + [ecodes.KEY_KPENTER]
        pad.keypad.press(*kp, *(getattr(ecodes, f"KEY_KP{d}") for d in "98765"))
        for _ in range(5):
            pad.keypad._put(ecodes.EV_KEY, ecodes.KEY_KP4, 2)
        pad.keypad.press(ecodes.KEY_KP4, ecodes.KEY_KPENTER)
        result = await asyncio.wait_for(pad.feedback.outcomes.get(), 30)
        task.cancel()
        return result

    assert _run(go())["ok"] is True


def test_an_unplugged_keypad_is_reported_and_opened_again(pad_world, caplog):
    keystore, sock, _ = pad_world

    async def go():
        unit = FakeUnit(sock)
        await unit.start()
        pad = SimPad(keystore, sock)
        task = asyncio.create_task(pad.run())
        await _until(lambda: pad.keypad.opened == 1)
        pad.keypad.press(ecodes.KEY_KP1)          # half an entry, lost with the keypad
        pad.keypad.unplug()
        await asyncio.sleep(0.8)                   # tries while it is away
        assert not pad.keypad.grabbed
        pad.keypad.plug_in()
        await _until(lambda: pad.keypad.opened == 2)
        await pad.press_stop()                     # works again
        await _until(lambda: unit.kinds() == ["stop"])
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="pinpad"):
        _run(go())
    lost = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(lost) == 1, "one line per outage, not one per try"
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_stop_goes_out_while_a_pin_is_being_checked(pad_world):
    keystore, sock, _ = pad_world

    async def go():
        unit = FakeUnit(sock)
        await unit.start()
        pad = SimPad(keystore, sock, timing=Timing(challenge_wait_s=5))
        task = asyncio.create_task(pad.run())
        entering = asyncio.create_task(pad.enter("t-evans", "432187"))  # no challenge yet
        await _until(lambda: pad.service._busy is not None)
        await pad.press_stop()
        await _until(lambda: "stop" in unit.kinds(), timeout=2)
        assert not pad.service._busy.done(), "stop did not wait for the try"
        result = await entering
        task.cancel()
        return result

    assert _run(go())["reason"] == "no challenge: press record first"


def test_a_half_typed_entry_is_forgotten(pad_world):
    keystore, sock, _ = pad_world

    async def go():
        unit = FakeUnit(sock)
        unit.armed = True
        await unit.start()
        pad = SimPad(keystore, sock, timing=Timing(entry_timeout_s=0.3))
        task = asyncio.create_task(pad.run())
        pad.keypad.press(ecodes.KEY_KP1, ecodes.KEY_KPENTER, ecodes.KEY_KP4, ecodes.KEY_KP3)
        await asyncio.sleep(0.8)
        result = await pad.enter("t-evans", "432187")  # would be 43432187 if remembered
        task.cancel()
        return result

    assert _run(go())["ok"] is True


def test_an_unknown_teacher_number_is_refused_on_the_pad(pad_world):
    keystore, sock, _ = pad_world

    async def go():
        unit = FakeUnit(sock)
        await unit.start()
        pad = SimPad(keystore, sock)
        task = asyncio.create_task(pad.run())
        pad.keypad.press(ecodes.KEY_KP7, ecodes.KEY_KPENTER)
        result = await asyncio.wait_for(pad.feedback.outcomes.get(), 10)
        task.cancel()
        return result, unit.kinds()

    result, sent = _run(go())
    assert result["reason"] == "no teacher 7 on this pad" and sent == []


def test_the_real_keypad_opener_says_why_it_cannot_open(tmp_path):
    with pytest.raises(OSError):
        open_keypad(str(tmp_path / "no-such-event-device"))
    with pytest.raises(OSError):
        open_keypad("No Such Keypad Model")


def test_the_pad_held_key_stays_locked_across_restarts_of_the_pad(lab):
    # Through the real daemon and the real pad service (the simulator runs it inside the daemon
    # process, so restarting the daemon restarts the pad service).
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        for _ in range(MAX_WRONG_PINS):
            result = unit.control("pin", teacher="t-evans", pin="000000")["result"]
            assert result["reason"] == "wrong PIN"
        result = unit.control("pin", teacher="t-evans", pin="432187")["result"]
        assert result == {"type": "result", "ok": False, "pad": True,
                          "reason": "locked after too many wrong PINs: ask IT"}
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        result = unit.control("pin", teacher="t-evans", pin="432187")["result"]
        assert result["reason"] == "locked after too many wrong PINs: ask IT"
        # Another teacher on the same pad is not locked out.
        assert unit.control("pin", teacher="t-jones", pin="987654")["result"]["ok"] is True
        unit.wait_state("recording")
        unit.control("press")
        unit.wait_state("idle")
        config = lab.root / "pinpad.toml"
        config.write_text(f'keystore = "{lab.pad_dir}"\n')
        reset = subprocess.run([sys.executable, "-m", "pinpad.cli", "--config", str(config),
                                "reset", "1"], capture_output=True, text=True, timeout=60)
        assert reset.returncode == 0, reset.stderr
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"] is True
        unit.wait_state("recording")
    tries = [e for e in lab.timeline() if e["ev"] == "token"]
    assert [e["ok"] for e in tries] == [True, True], "no token left the pad for a wrong PIN"


@pytest.fixture(scope="module")
def fido_lab(tmp_path_factory):
    """t-ahmed starts with a security key (PIN 246810); the pad holds only their card."""
    from hwsim.lab import Lab
    return Lab.create(tmp_path_factory.mktemp("fido-lab"), teachers={"t-ahmed": "246810"},
                      security_keys={"t-ahmed"})


def test_a_security_key_teacher_gets_an_assertion_over_the_challenge_sent(fido_lab, short_dir):
    from formats.assertion import client_data_hash, parse_client_data, parse_message
    from formats.card import TeacherCard
    lab = fido_lab.copy(short_dir / "lab")
    card = TeacherCard.parse(lab.key_files("t-ahmed").card.read_bytes())
    assert not (lab.pad_dir / "1" / "key.sealed").exists(), "no key of theirs on the pad"
    sock = short_dir / "unit.sock"

    async def go():
        unit = FakeUnit(sock)
        unit.armed = True
        await unit.start()
        pad = SimPad(lab.pad_dir, sock, security_keys=lab.security_keys_dir)
        task = asyncio.create_task(pad.run())
        result = await pad.enter("t-ahmed", "246810", action="discard")
        task.cancel()
        return unit, result

    unit, result = _run(go())
    assert result["ok"] is True
    (msg,) = unit.received
    assert msg["type"] == "assertion"
    assertion = parse_message(msg["assertion"])
    fields = parse_client_data(assertion.client_data)
    assert (fields.teacher_id, fields.device_id, fields.nonce, fields.action, fields.recipient) \
        == ("t-ahmed", DEVICE, "n-1", "discard", card.recipient)
    assert card.security_key is not None
    card.security_key.public_key.verify(
        assertion.authenticator_data + client_data_hash(assertion.client_data),
        assertion.signature)


def test_a_security_key_locked_by_wrong_pins_stays_locked_across_pad_restarts(fido_lab,
                                                                             short_dir):
    from hwsim.security_key import MAX_PIN_RETRIES
    lab = fido_lab.copy(short_dir / "lab")
    sock = short_dir / "unit.sock"

    async def tries(pins: list[str]) -> tuple[list[str], list[str]]:
        unit = FakeUnit(sock)
        unit.armed = True
        await unit.start()
        pad = SimPad(lab.pad_dir, sock, security_keys=lab.security_keys_dir)
        task = asyncio.create_task(pad.run())
        reasons = [(await pad.enter("t-ahmed", pin))["reason"] for pin in pins]
        task.cancel()
        unit.server.close()
        return reasons, unit.kinds()

    reasons, sent = _run(tries(["000000"] * MAX_PIN_RETRIES + ["246810"]))
    assert reasons[0] == f"wrong PIN, {MAX_PIN_RETRIES - 1} tries left"
    assert reasons[-2:] == ["security key locked", "security key locked"]
    assert sent == [], "nothing signed reached the unit"
    sock.unlink()
    reasons, sent = _run(tries(["246810"]))  # a new pad service, the key plugged in again
    assert reasons == ["security key locked"] and sent == []
