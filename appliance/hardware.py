"""Hardware backends, chosen by a factory the way gpiozero chooses a pin factory.

    hw = make_hardware("sim", config)     # or "pi"; $CLASSCAM_HW or `--hw` pick it
    hw.recording_led.on()

The daemon's code is the same on a Pi and on a PC; only this bundle differs. Nothing here
imports `hwsim` except the `sim` branch of `make_hardware`.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import gpiozero

from appliance.config import Config
from appliance.notice import Speaker
from capture.pipeline import Camera, CaptureSettings, Microphone
from led_indicator.lights import RecordingLed, StatusLed

if TYPE_CHECKING:
    from appliance.unit import Unit

KINDS = ("pi", "sim")


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
    microphone: Microphone
    trace: Trace = no_trace
    free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free
    # Extra tasks the backend runs beside the daemon (the simulator's control socket and pad).
    services: list[Callable[["Unit"], Awaitable[None]]] = field(default_factory=list)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    # Backend-specific handles for tests and tools (the simulator's `SimParts`); None on a Pi.
    parts: Any = None

    def close(self) -> None:
        """Release every device; the recording LED is darkened first."""
        self.recording_led.close()
        self.status_led.close()
        self.button.close()
        for hook in self.on_close:
            hook()


def hardware_kind(cli_choice: str | None) -> str:
    """`--hw` if given, else $CLASSCAM_HW, else `pi`."""
    kind = cli_choice or os.environ.get("CLASSCAM_HW", "pi")
    if kind not in KINDS:
        raise ValueError(f"unknown hardware kind {kind!r} (choose from {', '.join(KINDS)})")
    return kind


def make_hardware(kind: str, config: Config) -> Hardware:
    """Build the backends of `kind` for `config`."""
    if kind == "sim":
        from hwsim.factory import make_sim_hardware
        return make_sim_hardware(config)
    if kind == "pi":
        return _make_pi_hardware(config)
    raise ValueError(f"unknown hardware kind {kind!r}")


def capture_settings(config: Config) -> CaptureSettings:
    """The capture chain's settings from the configuration."""
    return CaptureSettings(**config.capture.model_dump())


def _make_pi_hardware(config: Config) -> Hardware:
    from appliance.speaker import SoundDeviceSpeaker
    from capture.pi import PiCamera, SoundDeviceMicrophone
    gpio, c = config.gpio, config.capture
    return Hardware(
        button=gpiozero.Button(gpio.button_pin, pull_up=True, bounce_time=gpio.button_bounce_s or None),
        recording_led=RecordingLed(gpio.recording_led_pin),
        status_led=StatusLed(gpio.status_led_pins),
        speaker=SoundDeviceSpeaker(),
        camera=PiCamera((c.width, c.height), c.fps),
        microphone=SoundDeviceMicrophone(c.audio_rate),
    )
