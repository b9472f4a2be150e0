"""Hardware backends, found by name the way gpiozero finds a pin factory (`gpiozero_pin_factories`).

    hw = make_hardware("sim", config)     # or "pi"; $CLASSCAM_HW or `--hw` pick it
    hw.recording_led.on()

A backend is a function `(Config) -> Hardware` registered under the entry-point group
`classcam.hardware` by the distribution that provides it: `pi` by the daemon's own
(`appliance/pi_hardware.py`), `sim` by the simulator's (`classcam-sim`, `hwsim/factory.py`). The
daemon's code is the same on a Pi and on a PC; only this bundle differs, and it never names a
backend's module.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Awaitable, Callable

import gpiozero

from appliance.config import Config
from appliance.notice import Speaker
from capture.pipeline import Camera, CaptureSettings, Microphone
from led_indicator.lights import RecordingLed, StatusLed

if TYPE_CHECKING:
    from appliance.unit import Unit

HARDWARE_GROUP = "classcam.hardware"


class Trace(Protocol):
    """Records an event on the simulator's timeline; does nothing on a real unit."""

    def __call__(self, event: str, **fields: Any) -> None: ...


def no_trace(event: str, **fields: Any) -> None:
    """The real unit keeps no record of what happened when (P9)."""


@dataclass
class Hardware:
    """Everything the daemon touches."""

    button: gpiozero.Button
    recording_led: RecordingLed
    status_led: StatusLed
    speaker: Speaker
    camera: Camera
    microphone: Microphone | None  # the one `[audio] mode` names; None: "none", video only
    trace: Trace = no_trace
    free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free
    # Why the speaker or microphone cannot be used (missing, or HDMI), or None; called at
    # start-up and before every arm, off the event loop (it may rescan the sound devices).
    check_audio: Callable[[], str | None] = lambda: None
    # Tasks a backend runs beside the daemon, each given the running unit and cancelled when the
    # daemon stops; the Pi backend runs none.
    tasks: list[Callable[[Unit], Awaitable[None]]] = field(default_factory=list)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release every device; the recording LED is darkened first."""
        self.recording_led.close()
        self.status_led.close()
        self.button.close()
        for hook in self.on_close:
            hook()


def hardware_kind(cli_choice: str | None) -> str:
    """`--hw` if given, else $CLASSCAM_HW, else `pi`; ValueError unless a backend of that name is
    installed."""
    kind = cli_choice or os.environ.get("CLASSCAM_HW", "pi")
    _backend(kind)
    return kind


def make_hardware(kind: str, config: Config) -> Hardware:
    """Build the backends of `kind` for `config`."""
    return _backend(kind).load()(config)


def backends() -> dict[str, EntryPoint]:
    """The installed hardware backends by name."""
    return {ep.name: ep for ep in entry_points(group=HARDWARE_GROUP)}


def capture_settings(config: Config) -> CaptureSettings:
    """The capture chain's settings from the configuration."""
    return CaptureSettings(**config.capture.model_dump(), zones=config.privacy.capture_zones())


def _backend(kind: str) -> EntryPoint:
    found = backends()
    if kind not in found:
        raise ValueError(f"unknown hardware kind {kind!r} (installed: "
                         f"{', '.join(sorted(found)) or 'none'})")
    return found[kind]
