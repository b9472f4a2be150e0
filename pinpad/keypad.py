"""The USB numeric keypad, read through python-evdev and grabbed exclusively (EVIOCGRAB): while
the pad service holds it, no other process (console, getty, a desktop) sees a keystroke.

    device = open_keypad("auto")        # or a path (/dev/input/by-id/...-event-kbd) or a name
    async for event in device.async_read_loop():
        key = KEYMAP.get(event.code) if event.type == ecodes.EV_KEY and event.value == 1 else None

The keymap, for any standard USB HID numeric keypad (the kernel reports the keypad's own key
codes whatever the Num Lock state):

    0-9            KEY_KP0..KEY_KP9 (and KEY_0..KEY_9)   digits
    Enter          KEY_KPENTER (and KEY_ENTER)           take the teacher number / the PIN
    Backspace, Esc KEY_BACKSPACE, KEY_ESC, KEY_KPDOT     cancel: forget what was typed
    +              KEY_KPPLUS                            record (arms the unit, like its button)
    -              KEY_KPMINUS                           stop (no PIN needed, P8)
    /              KEY_KPSLASH                           discard: the next PIN signs a discard
    *              KEY_KPASTERISK                        bookmark this moment of the recording
    Num Lock       KEY_NUMLOCK (and KEY_PAUSE)           pause the recording (resume: + and PIN)

Only key presses count (value 1): auto-repeat (2) and releases (0) are ignored, so a key held
down types one digit.
"""
from __future__ import annotations

import enum
from typing import Protocol
from collections.abc import AsyncIterator

from evdev import InputDevice, InputEvent, ecodes, list_devices


class Key(enum.Enum):
    """What a key does on the pad (digits are their own strings)."""

    ENTER = "enter"
    CANCEL = "cancel"
    RECORD = "record"
    STOP = "stop"
    DISCARD = "discard"
    MARK = "mark"
    PAUSE = "pause"


KEYMAP: dict[int, str | Key] = {
    **{getattr(ecodes, f"KEY_KP{d}"): str(d) for d in range(10)},
    **{getattr(ecodes, f"KEY_{d}"): str(d) for d in range(10)},
    ecodes.KEY_KPENTER: Key.ENTER, ecodes.KEY_ENTER: Key.ENTER,
    ecodes.KEY_BACKSPACE: Key.CANCEL, ecodes.KEY_ESC: Key.CANCEL, ecodes.KEY_KPDOT: Key.CANCEL,
    ecodes.KEY_KPPLUS: Key.RECORD,
    ecodes.KEY_KPMINUS: Key.STOP,
    ecodes.KEY_KPSLASH: Key.DISCARD,
    ecodes.KEY_KPASTERISK: Key.MARK,
    ecodes.KEY_NUMLOCK: Key.PAUSE, ecodes.KEY_PAUSE: Key.PAUSE,
}
# A device is taken for a keypad by `auto` when it has these keys.
_KEYPAD_KEYS = {ecodes.KEY_KP0, ecodes.KEY_KP9, ecodes.KEY_KPENTER}


class Keypad(Protocol):
    """What the pad service uses of `evdev.InputDevice` (the simulator's keypad has the same)."""

    name: str
    path: str | bytes

    def grab(self) -> None: ...
    def ungrab(self) -> None: ...
    def close(self) -> None: ...
    def async_read_loop(self) -> AsyncIterator[InputEvent]: ...


def key_of(event: InputEvent) -> str | Key | None:
    """The pad key an event presses, or None (not a key press, or a key the pad ignores)."""
    if event.type != ecodes.EV_KEY or event.value != 1:
        return None
    return KEYMAP.get(event.code)


def open_keypad(spec: str) -> InputDevice:
    """Open and grab the keypad named by `spec`: `auto` (the first input device with keypad
    keys), a device path (`/dev/input/by-id/usb-...-event-kbd` stays the same across reboots),
    or a device name as `evdev`'s `name` gives it. Raises `OSError` (e.g. ENODEV, or EBUSY when
    another process has grabbed it)."""
    if spec.startswith("/"):
        device = InputDevice(spec)
    else:
        device = _find(spec)
    try:
        device.grab()
    except OSError:
        device.close()
        raise
    return device


def _find(spec: str) -> InputDevice:
    for path in sorted(list_devices()):
        try:
            device = InputDevice(path)
        except OSError:
            continue
        if (spec == "auto" and _KEYPAD_KEYS <= set(
                device.capabilities().get(ecodes.EV_KEY, []))) or device.name == spec:
            return device
        device.close()
    raise FileNotFoundError(19, f"no keypad {'found' if spec == 'auto' else repr(spec)}")
