"""The checks behind the health report and `classcam doctor`, one function per kind of part.

    results = passive_checks(view)             # the health tick: reads state, touches nothing
    results = await active_checks(view)        # doctor: also drives what it safely can

A check is `Check(name, state, reason, fix)`, `state` one of "ok", "fault", "in use". Passive
checks read what the unit already knows (its latched fault, the clock, the room left, what the
server said this period); they never open a device. Active checks add, while the unit is idle:
the recording LED driven dark and read back, the speaker playing a short tone, and a backend's
`probe()` of camera and microphone where it has one. Camera and microphone are never opened here:
only a teacher's start token opens them (P1), and nothing here reads or keeps a frame. While the
unit is not idle, camera, microphone, speaker and LED are left alone and reported "in use".
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Callable

from appliance.health.report import CHECKS

if TYPE_CHECKING:
    from appliance.hardware import Hardware
    from appliance.unit import Unit

MB = 1024 * 1024
TONE_S = 0.25

FIXES = {
    "camera": "check the camera cable and that the camera is enabled; then restart classcam",
    "microphone": "check the microphone is plugged in and not muted; then restart classcam",
    "speaker": "check the speaker and amplifier, and that espeak-ng is installed; the unit will "
               "not record until the notice can be played",
    "led": "check the recording LED's wiring (gpio.recording_led_pin); the unit will not record "
           "while it cannot light it",
    "clock": "check NTP (timedatectl; systemd-timesyncd) or set [clock] synchronised",
    "server": "check the network, [upload] url and the unit's certificate; recordings wait on "
              "the unit meanwhile",
    "storage": "free space will come back as uploads are confirmed; check the upload server",
    "software": "see `journalctl -u classcam`; report the lines to the classcam maintainers",
}


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    state: str            # "ok", "fault" or "in use"
    reason: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "fault"


@dataclass
class UnitView:
    """What the checks may read. `server` is the health service's latest word on the upload
    server (None: it answered; a string: why not)."""

    unit: Unit
    hw: Hardware
    clock_synchronised: Callable[[], bool]
    clock_setting: str
    server: str | None
    min_room_mb: float


def passive_checks(view: UnitView) -> list[Check]:
    """Every check in CHECKS from what is already known; touches no device."""
    faults = latched_faults(view.unit.fault, view.unit.fault_reason)
    results = {name: _check(name, faults.get(name)) for name in CHECKS}
    results["clock"] = _check("clock", clock_fault(view.clock_setting, view.clock_synchronised))
    results["server"] = _check("server", view.server)
    if "storage" not in faults:
        room = view.unit.room()
        if room < view.min_room_mb * MB:
            results["storage"] = _check("storage", f"only {max(room, 0) // MB} MB of room for "
                                                   "recordings")
    return [results[name] for name in CHECKS]


async def active_checks(view: UnitView) -> list[Check]:
    """`passive_checks`, with LED, speaker, camera and microphone tried while the unit is idle."""
    results = {c.name: c for c in passive_checks(view)}
    unit, hw = view.unit, view.hw
    if unit.state.value != "idle":
        for name in ("camera", "microphone", "speaker", "led"):
            results[name] = Check(name, "in use", "the unit is busy; checked next time it is idle")
        return [results[name] for name in CHECKS]
    results["led"] = _led_check(hw, results["led"])
    for name, device in (("camera", hw.camera), ("microphone", hw.microphone)):
        probe = getattr(device, "probe", None)
        if probe is not None and not results[name].failed:
            try:
                await asyncio.to_thread(probe)
            except Exception as e:
                results[name] = _check(name, str(e))
    if unit.state.value == "idle" and not results["speaker"].failed:
        try:
            await asyncio.to_thread(hw.speaker.play, tone(), threading.Event())
        except Exception as e:
            results["speaker"] = _check("speaker", str(e))
    return [results[name] for name in CHECKS]


def latched_faults(component: str | None, reason: str | None) -> dict[str, str]:
    """The unit's own fault, as the check it belongs to."""
    if component is None:
        return {}
    reason = reason or component
    name = {"led": "led", "speaker": "speaker", "storage": "storage", "internal": "software"}.get(
        component)
    if name is None:  # "capture": which device, if the reason says
        name = "microphone" if "microphone" in reason else "camera"
    return {name: reason}


def clock_fault(setting: str, synchronised: Callable[[], bool]) -> str | None:
    if setting == "no" or synchronised():
        return None
    return "not synchronised: tokens are checked by their challenge alone"


def tone():
    """A short quiet beep for the speaker check."""
    import math
    import struct

    from appliance.notice import Sound
    rate = 16000
    samples = (int(3000 * math.sin(2 * math.pi * 880 * i / rate)) for i in range(int(rate * TONE_S)))
    return Sound("check", b"".join(struct.pack("<h", s) for s in samples), rate)


def _led_check(hw, latched: Check) -> Check:
    # On the event loop, right after seeing the unit idle: nothing can light it in between.
    led = hw.recording_led
    if led.is_lit:
        return _check("led", "lit while the unit is idle: a capture device did not close")
    try:
        led.confirm(False)
    except Exception as e:
        return _check("led", str(e))
    return Check("led", "ok") if not latched.failed else latched


def _check(name: str, reason: str | None) -> Check:
    if reason is None:
        return Check(name, "ok")
    return Check(name, "fault", reason, FIXES[name])
