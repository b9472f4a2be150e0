"""A simulated USB numeric keypad behind python-evdev's `InputDevice` interface, and the real pad
service (`pinpad.service.PadService`) reading it: the simulator's PIN pad is the real pad code,
fed real `evdev.InputEvent`s (this machine has no /dev/uinput to make a kernel device).

    pad = SimPad(keystore_dir, socket_path, timeline)
    task = asyncio.create_task(pad.run())
    await pad.press_record()                        # the keypad's "+" key
    result = await pad.enter("t-evans", "432187")   # types: 1 Enter 4 3 2 1 8 7 Enter

    pad.keypad.unplug()        # the next read raises OSError; the service opens it again
    pad.keypad.plug_in()
"""
from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator
from pathlib import Path

from evdev import InputEvent, ecodes

from hwsim.security_key import SimSecurityKey
from hwsim.timeline import Timeline
from pinpad.feedback import Feedback
from pinpad.keystore import Keystore, PadRefusal
from pinpad.link import UnitLink
from pinpad.service import PadService, Timing, security_key_signer


class SimKeypad:
    """The methods of `evdev.InputDevice` the pad service uses, over a queue of key events."""

    def __init__(self, name: str = "Simulated USB Keypad",
                 path: str = "/dev/input/by-id/usb-sim-keypad-event-kbd"):
        self.name = name
        self.path = path
        self.grabbed = False
        self.plugged = True
        self.opened = 0
        self._events: asyncio.Queue[InputEvent | None] = asyncio.Queue()

    def open(self) -> SimKeypad:
        """As `pinpad.keypad.open_keypad`: grab, or `OSError` when unplugged or grabbed."""
        if not self.plugged:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.path)
        self.grab()
        self.opened += 1
        return self

    def grab(self) -> None:
        if self.grabbed:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.grabbed = False

    async def async_read_loop(self) -> AsyncIterator[InputEvent]:
        while True:
            event = await self._events.get()
            if event is None or not self.plugged:
                raise OSError(errno.ENODEV, "No such device")
            yield event

    def read_one(self) -> InputEvent | None:
        try:
            event = self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if event is None:
            raise OSError(errno.ENODEV, "No such device")
        return event

    def press(self, *codes: int) -> None:
        """Press and release each key in turn, as the kernel reports it (with SYN reports)."""
        for code in codes:
            for value in (1, 0):
                self._put(ecodes.EV_KEY, code, value)
                self._put(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)

    def unplug(self) -> None:
        self.plugged = False
        self._events.put_nowait(None)

    def plug_in(self) -> None:
        while not self._events.empty():  # what was typed into an unplugged keypad is lost
            self._events.get_nowait()
        self.plugged = True

    def _put(self, type_: int, code: int, value: int) -> None:
        now = time.time()
        self._events.put_nowait(InputEvent(int(now), int(now % 1 * 1e6), type_, code, value))


class RecordingFeedback(Feedback):
    """What the pad told the teacher, kept for the simulator and written to its timeline."""

    def __init__(self, timeline: Timeline):
        self._timeline = timeline
        self.outcomes: asyncio.Queue[dict] = asyncio.Queue()

    def prompt(self) -> None:
        self._timeline("pad", said="prompt")

    def outcome(self, result: dict) -> None:
        if result.get("pad"):
            self._timeline("pad", refused=result["reason"])
        else:
            self._timeline("pad", said="accepted" if result["ok"] else "refused")
        self.outcomes.put_nowait(result)


class SimPad:
    """The real pad service on a `SimKeypad`; `enter` types what a teacher would. With
    `security_keys` (a directory of `SimSecurityKey` state files, `<teacher_id>.json`), a
    teacher who has one plugs it in before typing, and the pad finds it as it finds a USB key."""

    def __init__(self, keystore: Path, socket_path: Path, timeline: Timeline | None = None,
                 security_keys: Path | None = None, timing: Timing | None = None):
        self.keypad = SimKeypad()
        self.keystore = Keystore(keystore)
        self.security_keys = security_keys
        self.feedback = RecordingFeedback(timeline or Timeline())
        self.service = PadService(self.keystore, UnitLink(socket_path), self.keypad.open,
                                  self.feedback,
                                  security_key=security_key_signer(SimSecurityKey.list_devices),
                                  timing=timing or Timing())

    async def run(self) -> None:
        await self.service.run()

    async def press_record(self) -> None:
        """The keypad's record key: arms the unit, as the button does."""
        self.keypad.press(ecodes.KEY_KPPLUS)

    async def press_stop(self) -> None:
        self.keypad.press(ecodes.KEY_KPMINUS)

    async def press_mark(self) -> None:
        """The bookmark key (*)."""
        self.keypad.press(ecodes.KEY_KPASTERISK)

    async def press_pause(self) -> None:
        """The pause key (Num Lock)."""
        self.keypad.press(ecodes.KEY_NUMLOCK)

    async def enter(self, teacher_id: str, pin: str, action: str = "start",
                    wait_s: float = 30.0) -> dict:
        """Type the teacher's number and PIN ("/" first for a discard); returns the unit's
        result, or the pad's own refusal (`"pad": True`)."""
        try:
            number = self.keystore.number_of(teacher_id)
        except PadRefusal as e:
            return {"type": "result", "ok": False, "reason": e.reason, "pad": True}
        while not self.feedback.outcomes.empty():
            self.feedback.outcomes.get_nowait()
        self.plug_security_key(teacher_id)
        codes = [ecodes.KEY_KPSLASH] if action == "discard" else []
        codes += [*map(_digit, str(number)), ecodes.KEY_KPENTER,
                  *map(_digit, pin), ecodes.KEY_KPENTER]
        self.keypad.press(*codes)
        return await asyncio.wait_for(self.feedback.outcomes.get(), wait_s)


    def plug_security_key(self, teacher_id: str | None) -> SimSecurityKey | None:
        """Plug in this teacher's security key, if they have one (and unplug any other)."""
        state = None if self.security_keys is None or teacher_id is None \
            else self.security_keys / f"{teacher_id}.json"
        key = SimSecurityKey(state) if state is not None and state.exists() else None
        SimSecurityKey.plugged[:] = [key] if key is not None else []
        return key


def _digit(d: str) -> int:
    return getattr(ecodes, f"KEY_KP{d}")


def enrol(keystore: Path, card_path: Path, signing_key_path: Path, passphrase: str,
          pin: str) -> int:
    """Put a teacher's signing key on the pad, sealed under their PIN (what `classcam-pinpad
    enrol` does); returns their teacher number."""
    from teacher_tools.keys import load_signing_key
    key = load_signing_key(signing_key_path, passphrase)
    return Keystore(keystore).enrol(card_path.read_bytes(), key, pin)
