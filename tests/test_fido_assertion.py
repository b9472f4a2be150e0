"""Assertions from a security key, checked by the unit with the rules of a JWT start token and
FIDO's own (appliance/assertion.py), the table of tests/test_tokens.py for the assertion path:
each bad assertion refused with its reason, over the pad link's own parser and dispatch, with no
capture in the simulator's timeline."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from appliance.assertion import COUNTERS_FILE, CounterUse, SignCounters
from appliance.padlink import PadLink, encode, parse_message
from appliance.token import TokenRejected
from appliance.unit import State
from formats.assertion import Assertion
from formats.card import TeacherCard
from hwsim.invariants import check_all, device_intervals
from hwsim.lab import DEVICE_ID, Lab
from hwsim.security_key import SimSecurityKey
from pinpad.security_key import assertion_message
from tests.fido_keys import PIN, claims, credential_for, enrol, sign
from tests.inprocess import sim_unit


@dataclass
class Room:
    """A lab whose two teachers each have a simulated security key enrolled in their card."""

    lab: Lab
    evans_key: SimSecurityKey
    evans: TeacherCard
    jones_key: SimSecurityKey
    jones: TeacherCard

    def credential(self, card: TeacherCard) -> bytes:
        assert card.security_key is not None
        return card.security_key.credential_id


@pytest.fixture(scope="module")
def room(lab_template):
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root / "lab")
    evans_key = SimSecurityKey(root / "evans-key.json", pin=PIN)
    jones_key = SimSecurityKey(root / "jones-key.json", pin=PIN)
    yield Room(lab, evans_key, enrol(lab, "t-evans", evans_key), jones_key,
               enrol(lab, "t-jones", jones_key))
    shutil.rmtree(root, ignore_errors=True)


Make = Callable[[Room, dict], dict]


def good(r: Room, challenge: dict) -> dict:
    """What the pad sends: the sim key's assertion through pinpad/security_key.py."""
    return assertion_message(r.evans_key, r.evans, PIN, challenge, "start")


def evans_signs(data: Callable[[Room, str], bytes], **how) -> Make:
    return lambda r, ch: sign(r.evans_key, "t-evans", r.credential(r.evans),
                              data(r, ch["nonce"]), **how).message()


def edited(make: Make, **fields) -> Make:
    """`make`'s assertion with fields replaced after the key signed it."""
    def edit(r: Room, ch: dict) -> dict:
        from formats.assertion import parse_message as parse
        return replace(parse(make(r, ch)["assertion"]), **fields).message()
    return edit


def jones_signs_as_evans(r: Room, ch: dict) -> dict:
    # t-jones's own key and credential, over client data naming t-evans
    return sign(r.jones_key, "t-evans", r.credential(r.jones),
                claims(r.evans, DEVICE_ID, ch["nonce"])).message()


def jones_signs_under_evans_credential(r: Room, ch: dict) -> dict:
    a = sign(r.jones_key, "t-evans", r.credential(r.jones), claims(r.evans, DEVICE_ID, ch["nonce"]))
    return replace(a, credential_id=r.credential(r.evans)).message()


CASES: dict[str, tuple[Make, str]] = {
    "unknown teacher": (edited(good, teacher_id="t-nobody"), "unknown teacher"),
    "wrong credential": (edited(good, credential_id=os.urandom(32)), "unknown credential"),
    "other teacher's credential": (jones_signs_as_evans, "unknown credential"),
    "another key under the teacher's credential id": (jones_signs_under_evans_credential,
                                                      "bad signature"),
    "client data changed after signing": (
        edited(good, client_data=b'{"tampered":1}'), "bad signature"),
    "authenticator data changed after signing": (
        lambda r, ch: edited(good, authenticator_data=_flip_counter(
            _auth_data(good(r, ch))))(r, ch), "bad signature"),
    "other device": (evans_signs(lambda r, n: claims(r.evans, "room-9", n)), "wrong device"),
    "minted before the challenge": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, "guessed-nonce")),
        "expired challenge"),
    "user presence flag missing": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n), present=False),
        "user presence missing"),
    "PIN not verified by the key": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n), verified=False),
        "PIN not verified by the key"),
    "wrong action": (evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n, action="record")),
                     "wrong action"),
    "recipient mismatch": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n, recipient=r.jones.recipient)),
        "recipient does not match roster"),
    "client data names another teacher": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n, teacher_id="t-jones")),
        "malformed"),
    "expired (clock synchronised)": (
        evans_signs(lambda r, n: claims(r.evans, DEVICE_ID, n, now=time.time() - 3600)),
        "expired token"),
}


def _auth_data(msg: dict) -> bytes:
    from formats.assertion import parse_message as parse
    return parse(msg["assertion"]).authenticator_data


def _flip_counter(auth: bytes) -> bytes:
    return auth[:33] + (int.from_bytes(auth[33:37], "big") + 1000).to_bytes(4, "big") + auth[37:]


@dataclass
class Outcome:
    results: list[dict]     # the unit's answers to each message, in order
    states: list[State]     # the unit's state after each
    events: list[dict]      # the simulator's timeline


def run(room: Room, root: Path, *steps: Callable[[Room, dict], dict | None],
        lab: Lab | None = None) -> Outcome:
    """A fresh unit (its state under `root`) on `room`'s roster; each step is given the last
    challenge the pad link sent and returns a message for the link (None: press the button)."""
    async def scenario() -> Outcome:
        unit, hw, spool = sim_unit(lab or room.lab, root)
        link = PadLink(unit)
        sent: list[dict] = []
        link.connect(sent.append)
        results, states = [], []
        try:
            for step in steps:
                if unit.state is State.IDLE:
                    await unit.press()
                challenge = [m for m in sent if m["type"] == "challenge"][-1]
                msg = step(room, challenge)
                if msg is None:
                    await unit.press()
                    await _until(lambda: unit.state in (State.IDLE, State.ARMED))
                    continue
                sent.clear()
                sent.append(challenge)
                await link.handle(encode(msg), sent.append)
                results.append(sent[-1])
                if results[-1]["ok"]:
                    await _until(lambda: unit.state is State.RECORDING)
                states.append(unit.state)
            if unit.state is State.RECORDING:
                await unit.stop()
            return Outcome(results, states, list(hw.parts.timeline.events))
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()
    return asyncio.run(scenario())


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def press(r: Room, challenge: dict) -> None:
    return None


def refused(reason: str) -> dict:
    return {"type": "result", "ok": False, "reason": reason}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_assertion_is_refused_with_its_reason(room, tmp_path, caplog, case):
    make, reason = CASES[case]
    with caplog.at_level(logging.WARNING, logger="appliance.unit"):
        out = run(room, tmp_path, make)
    assert out.results == [refused(reason)]
    assert out.states == [State.ARMED]
    assert device_intervals(out.events) == []
    assert [(e["ok"], e["reason"]) for e in out.events if e["ev"] == "token"] == [(False, reason)]
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        f"token refused: {reason}"]


def test_the_sim_keys_assertion_through_the_pad_starts_a_recording(room, tmp_path):
    out = run(room, tmp_path, good)
    assert out.results == [{"type": "result", "ok": True, "reason": "recording"}]
    assert len(device_intervals(out.events)) == 2  # camera and microphone, opened and closed
    assert check_all(out.events) == []
    (accepted,) = [e for e in out.events if e["ev"] == "token"]
    assert accepted["ok"] and accepted["teacher"] == "t-evans" and accepted["act"] == "start"


def test_a_replayed_assertion_is_refused_while_recording_and_after_rearming(room, tmp_path):
    sent: list[dict] = []

    def first(r: Room, ch: dict) -> dict:
        sent.append(good(r, ch))
        return sent[0]

    out = run(room, tmp_path, first, lambda r, ch: sent[0], press, press,
              lambda r, ch: sent[0])
    assert out.results == [{"type": "result", "ok": True, "reason": "recording"},
                           refused("replayed"), refused("replayed")]
    assert len(device_intervals(out.events)) == 2
    assert check_all(out.events) == []


def test_an_assertion_for_a_challenge_that_ended_is_refused(room, tmp_path):
    old: list[dict] = []

    def keep(r: Room, ch: dict) -> None:
        old.append(ch)  # the challenge of this arming, then disarm
        return None

    out = run(room, tmp_path, keep, lambda r, ch: good(r, old[0]))
    assert out.results == [refused("expired challenge")]
    assert device_intervals(out.events) == []


def test_an_assertion_while_not_armed_is_refused(room, tmp_path):
    async def scenario() -> tuple[dict, State]:
        unit, hw, spool = sim_unit(room.lab, tmp_path)
        link = PadLink(unit)
        sent: list[dict] = []
        try:
            challenge = {"type": "challenge", "device": DEVICE_ID, "nonce": "n", "expires_in": 60}
            await link.handle(encode(good(room, challenge)), sent.append)
            return sent[-1], unit.state
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()
    assert asyncio.run(scenario()) == (refused("not armed"), State.IDLE)


def test_a_cloned_key_whose_counter_does_not_go_up_is_refused_also_after_a_restart(tmp_path,
                                                                                   room):
    # A copy of the key's state taken before it was used: a clone, behind the real key.
    clone_state = tmp_path / "clone.json"
    shutil.copy(room.evans_key.state_file, clone_state)
    clone = SimSecurityKey(clone_state)

    def by_clone(r: Room, ch: dict) -> dict:
        return assertion_message(clone, r.evans, PIN, ch, "start")

    # The teacher's real key is used twice; the clone, behind it, is refused.
    unit_root = tmp_path / "unit"
    out = run(room, unit_root, good, press, good, press, by_clone)
    assert [r["reason"] for r in out.results] == ["recording", "recording",
                                                  "signature counter did not increase"]
    assert len(device_intervals(out.events)) == 4  # only the real key's two recordings
    # The counter is kept in the unit's state directory: a restarted unit refuses it too.
    assert (unit_root / "var" / COUNTERS_FILE).exists()
    again = run(room, unit_root, by_clone)
    assert again.results == [refused("signature counter did not increase")]
    # A unit without that state (a new one) has no counter to compare with.
    fresh = run(room, tmp_path / "other-unit", by_clone)
    assert fresh.results == [{"type": "result", "ok": True, "reason": "recording"}]


def test_a_key_without_a_counter_works_while_its_counter_stays_zero(tmp_path, lab_template):
    lab = lab_template.copy(tmp_path / "lab")
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN, counter=False)
    card = enrol(lab, "t-evans", key)
    r = Room(lab, key, card, key, card)

    def start(r: Room, ch: dict) -> dict:
        return assertion_message(key, card, PIN, ch, "start")

    out = run(r, tmp_path / "unit", start, press, start)
    assert [x["reason"] for x in out.results] == ["recording", "recording"]
    assert key.counter == 0


def test_zero_after_a_counted_signature_is_going_backwards(tmp_path):
    counters = SignCounters(tmp_path / COUNTERS_FILE)
    counters.check(CounterUse(b"c", 0))
    counters.record(CounterUse(b"c", 0))
    counters.check(CounterUse(b"c", 0))
    counters.record(CounterUse(b"c", 5))
    reloaded = SignCounters(tmp_path / COUNTERS_FILE)
    for counter in (0, 4, 5):
        with pytest.raises(TokenRejected) as e:
            reloaded.check(CounterUse(b"c", counter))
        assert str(e.value.reason) == "signature counter did not increase"
    reloaded.check(CounterUse(b"c", 6))
    reloaded.check(CounterUse(b"other", 1))
    # The file names credentials by a hash, never a teacher (P9).
    assert "c" not in json.loads((tmp_path / COUNTERS_FILE).read_text())


def test_an_unreadable_counter_file_refuses_every_assertion(tmp_path):
    (tmp_path / COUNTERS_FILE).write_text("{not json")
    with pytest.raises(TokenRejected) as e:
        SignCounters(tmp_path / COUNTERS_FILE).check(CounterUse(b"c", 9))
    assert str(e.value.reason) == "signature counter did not increase"


def test_a_credential_made_for_another_relying_party_is_refused(tmp_path, lab_template, room):
    lab = lab_template.copy(tmp_path / "lab")
    key = SimSecurityKey(tmp_path / "key.json", pin=PIN)
    card = enrol(lab, "t-evans", key, credential_for(key, "login.example.org"))
    r = Room(lab, key, card, room.jones_key, room.jones)

    def other_rp(r: Room, ch: dict) -> dict:
        return sign(key, "t-evans", r.credential(card), claims(card, DEVICE_ID, ch["nonce"]),
                    rp_id="login.example.org").message()

    out = run(r, tmp_path / "unit", other_rp)
    assert out.results == [refused("wrong relying party")]


@pytest.mark.parametrize("change, reason", [
    (lambda a: {**a, "extra": "x"}, "assertion takes exactly"),
    (lambda a: {k: v for k, v in a.items() if k != "signature"}, "assertion takes exactly"),
    (lambda a: {**a, "signature": "not base64!"}, "signature is not base64url"),
    (lambda a: {**a, "signature": 7}, "signature must be a base64url string"),
    (lambda a: {**a, "teacher": "T Evans"}, "teacher is not a teacher id"),
    (lambda a: "a string", "assertion takes exactly"),
])
def test_the_pad_link_takes_an_assertion_with_exactly_its_fields(change, reason):
    inner = Assertion("t-evans", b"c", b"a", b"d", b"s").message()["assertion"]
    parse_message(encode({"type": "assertion", "assertion": inner}))
    with pytest.raises(Exception) as e:
        parse_message(encode({"type": "assertion", "assertion": change(inner)}))
    assert reason in str(e.value)
    with pytest.raises(Exception, match="assertion takes exactly"):
        parse_message(encode({"type": "assertion", "assertion": inner, "more": 1}))


def test_counters_written_out_of_order_keep_the_newest(tmp_path):
    # Writes run in threads: an older snapshot written after a newer one must not win.
    counters = SignCounters(tmp_path / COUNTERS_FILE)
    older = counters.remember(CounterUse(b"c", 3))
    newer = counters.remember(CounterUse(b"c", 7))
    counters.write(newer)
    counters.write(older)
    with pytest.raises(TokenRejected):
        SignCounters(tmp_path / COUNTERS_FILE).check(CounterUse(b"c", 5))
