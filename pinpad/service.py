"""The pad service: keys from the keypad in, start tokens to the unit out.

    service = PadService(keystore, UnitLink(socket), lambda: open_keypad("auto"), ToneFeedback())
    await service.run()                                  # until cancelled

What the teacher types (pinpad/keypad.py has the keymap):

    +                                   record: arms the unit (as its button does)
    [/]  NUMBER Enter  PIN Enter        their teacher number, then their PIN; "/" first signs
                                        a discard instead of a start
    -                                   stop, at any time (needs no PIN, P8)
    Backspace / Esc / .                 forget what was typed

After the PIN, a teacher whose key the pad holds has it unsealed (pinpad/keystore.py: counted
try, Argon2id) and the pad signs a JWT start token for the unit's challenge; a teacher whose
card names a security key has the security key sign an assertion over the challenge, checking
the PIN itself. What was typed is forgotten after each try and after `entry_timeout_s` without
a key. The pad writes no journal line about PINs, teachers or tries (P9): only about its
devices (the keypad gone or back, the unit unreachable).

A keypad that fails (unplugged: `OSError` on read) is reported once and opened again with a
growing wait; stop never waits for it (the unit's own button stops too).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fido2.ctap import CtapDevice
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from formats.card import TeacherCard
from formats.starttoken import mint
from pinpad.feedback import Feedback
from pinpad.keypad import Key, Keypad, key_of
from pinpad.keystore import MAX_PIN_DIGITS, Keystore, PadRefusal
from pinpad.link import LinkDown, UnitLink
from pinpad.security_key import SecurityKeyError, assertion_message, first_device

log = logging.getLogger(__name__)

MAX_NUMBER_DIGITS = 3
KEYPAD_REOPEN_MAX_S = 5.0

# Signs with a security key: (card, PIN, challenge, action) -> the link message to send.
# Runs in a worker thread; raises `PadRefusal` with the reason to tell the teacher.
SecurityKeySigner = Callable[[TeacherCard, str, dict, str], dict]


def security_key_signer(devices: Callable[[], Iterable[CtapDevice]]) -> SecurityKeySigner:
    """A `SecurityKeySigner` that asks the first security key `devices()` finds (on a Pi:
    python-fido2's `CtapHidDevice.list_devices`; in the simulator: its plugged-in keys) for an
    assertion over the challenge. The key checks the PIN and counts wrong tries itself."""
    def sign(card: TeacherCard, pin: str, challenge: dict, action: str) -> dict:
        try:
            return assertion_message(first_device(devices()), card, pin, challenge, action)
        except SecurityKeyError as e:
            raise PadRefusal(e.reason) from None
    return sign


@dataclass(frozen=True)
class Timing:
    """How long the pad waits: for the unit's challenge after the PIN, for the unit's result,
    and before it forgets a half-typed entry."""

    challenge_wait_s: float = 3.0
    result_timeout_s: float = 10.0
    entry_timeout_s: float = 30.0


class PadService:
    """One keypad, one keystore, one link to the unit."""

    def __init__(self, keystore: Keystore, link: UnitLink, open_keypad: Callable[[], Keypad],
                 feedback: Feedback, security_key: SecurityKeySigner | None = None,
                 timing: Timing = Timing()):
        self._keystore = keystore
        self._link = link
        self._open_keypad = open_keypad
        self._feedback = feedback
        self._security_key = security_key
        self._timing = timing
        self._number = ""
        self._pin = ""
        self._teacher: int | None = None
        self._action = "start"
        self._forget: asyncio.TimerHandle | None = None
        self._busy: asyncio.Task | None = None
        self._keypad_failing = False
        self._tasks: set[asyncio.Task] = set()

    async def run(self) -> None:
        """Serve until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._link.run())
            tasks.create_task(self._read_keypad())

    async def press(self, key: str | Key) -> None:
        """Act on one key press."""
        if key is Key.STOP:
            self._reset()
            self._spawn(self._send({"type": "stop"}))
        elif key is Key.RECORD:
            self._spawn(self._send({"type": "arm"}))
        elif key in (Key.MARK, Key.PAUSE):  # need no PIN: the unit refuses them unless recording
            self._spawn(self._send({"type": key.value}))
        elif self._busy is not None and not self._busy.done():
            return  # a try is under way: digits wait until it has its answer
        elif key is Key.CANCEL:
            self._reset()
        elif key is Key.DISCARD:
            self._reset()
            self._action = "discard"
            self._feedback.prompt()
        elif key is Key.ENTER:
            self._enter()
        elif isinstance(key, str):
            self._digit(key)
        self._schedule_forget()

    def _digit(self, digit: str) -> None:
        if self._teacher is None:
            if len(self._number) < MAX_NUMBER_DIGITS:
                self._number += digit
        elif len(self._pin) < MAX_PIN_DIGITS:
            self._pin += digit

    def _enter(self) -> None:
        if self._teacher is None:
            if not self._number:
                return
            number, self._number = int(self._number), ""
            try:
                self._keystore.teacher(number)
            except PadRefusal as e:
                self._refuse(e.reason)
                return
            self._teacher = number
            self._feedback.prompt()
            return
        number, pin, action = self._teacher, self._pin, self._action
        self._reset()
        self._busy = self._spawn(self._try(number, pin, action))

    async def _try(self, number: int, pin: str, action: str) -> None:
        try:
            result = await self._sign_and_send(number, pin, action)
        except PadRefusal as e:
            result = _refusal(e.reason)
        except (LinkDown, TimeoutError):
            result = _refusal("the unit did not answer")
        self._feedback.outcome(result)

    async def _sign_and_send(self, number: int, pin: str, action: str) -> dict:
        teacher = self._keystore.teacher(number)
        card = teacher.card
        if teacher.key_on_pad:
            key = await asyncio.to_thread(self._keystore.unlock, number, pin)
            challenge = await self._current_challenge()
            msg: dict[str, Any] = {"type": "token", "token": mint(
                key, card.teacher_id, challenge["device"], challenge["nonce"], card.recipient,
                action=action)}
        else:
            if self._security_key is None:
                raise PadRefusal("this pad cannot use security keys")
            challenge = await self._current_challenge()
            msg = await asyncio.to_thread(self._security_key, card, pin, challenge, action)
        self._link.used(challenge)
        return await self._link.request(msg, self._timing.result_timeout_s)

    async def _current_challenge(self) -> dict:
        challenge = await self._link.challenge(self._timing.challenge_wait_s)
        if challenge is None:
            raise PadRefusal("no challenge: press record first")
        return challenge

    async def _send(self, msg: dict) -> None:
        try:
            await self._link.send(msg)
        except LinkDown as e:
            log.warning("pad link: %s", e)
            self._feedback.outcome(_refusal("the unit did not answer"))

    def _refuse(self, reason: str) -> None:
        self._reset()
        self._feedback.outcome(_refusal(reason))

    def _reset(self) -> None:
        self._number = self._pin = ""
        self._teacher = None
        self._action = "start"

    def _schedule_forget(self) -> None:
        if self._forget is not None:
            self._forget.cancel()
        self._forget = asyncio.get_running_loop().call_later(self._timing.entry_timeout_s,
                                                             self._reset)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_keypad(self) -> None:
        retrying = AsyncRetrying(retry=retry_if_exception_type(OSError),
                                 wait=wait_exponential(multiplier=0.2, max=KEYPAD_REOPEN_MAX_S),
                                 before_sleep=self._keypad_lost)
        await retrying(self._open_and_read)

    async def _open_and_read(self) -> None:
        device = await asyncio.to_thread(self._open_keypad)
        if self._keypad_failing:
            self._keypad_failing = False
            log.warning("keypad: %s works again", device.name)
        try:
            async for event in device.async_read_loop():
                key = key_of(event)
                if key is not None:
                    await self.press(key)
        finally:
            self._reset()  # a half-typed PIN does not outlive the keypad
            try:
                device.ungrab()
            except OSError:
                pass
            device.close()
        raise OSError("the keypad stopped sending")

    def _keypad_lost(self, state: RetryCallState) -> None:
        assert state.outcome is not None
        if not self._keypad_failing:  # one line per outage, not one per try
            self._keypad_failing = True
            log.warning("keypad: cannot read (%s); opening it again", state.outcome.exception())


def _refusal(reason: str) -> dict:
    return {"type": "result", "ok": False, "reason": reason, "pad": True}
