"""The two lights, as gpiozero devices on whatever pin factory is in force.

    led = RecordingLed("GPIO27")   # the red recording light (P2)
    status = StatusLed(("GPIO5", "GPIO6", "GPIO13"))
    status.show(Pattern.ARMED)

Wiring: the recording LED from the pin through a resistor to ground (active high). The status LED
is a common-cathode RGB LED, one resistor per colour. With `GPIOZERO_PIN_FACTORY=mock` (or the
simulator's factory) both run unchanged without a Pi.
"""
from __future__ import annotations

import logging
import threading

import gpiozero

from led_indicator.patterns import Pattern

log = logging.getLogger(__name__)


class LedFault(Exception):
    """The recording LED cannot be driven or does not read back as driven."""


class RecordingLed:
    """The red recording light. Every change is read back; a light that cannot be driven is a
    `LedFault`, because a recording the room cannot see must not happen (P2)."""

    def __init__(self, pin: str, pin_factory: gpiozero.Factory | None = None):
        self._led = gpiozero.LED(pin, pin_factory=pin_factory)
        self._lock = threading.Lock()

    def on(self) -> None:
        """Light it, or raise `LedFault`."""
        self._drive(True)

    def off(self) -> None:
        """Darken it, or raise `LedFault`."""
        self._drive(False)

    def confirm(self, lit: bool) -> None:
        """Drive it again to `lit` and read it back; raises `LedFault` if it does not hold."""
        self._drive(lit)

    @property
    def is_lit(self) -> bool:
        return bool(self._led.value)

    def close(self) -> None:
        """Darken and release the pin (best effort: used on the way out)."""
        try:
            self._led.off()
        except Exception as e:  # the process is exiting; say so and go on
            log.error("recording LED: could not switch off on exit: %s", e)
        self._led.close()

    def _drive(self, lit: bool) -> None:
        with self._lock:
            try:
                self._led.value = lit
                readback = bool(self._led.value)
            except Exception as e:
                raise LedFault(f"recording LED cannot be driven: {e}") from e
            if readback != lit:
                raise LedFault("recording LED does not read back as driven")


class StatusLed:
    """The RGB status light; shows one `Pattern` at a time. Failures are logged, not raised:
    the status light is information, the recording light is the guarantee."""

    def __init__(self, pins: tuple[str, str, str] | list[str],
                 pin_factory: gpiozero.Factory | None = None):
        red, green, blue = pins
        self._led = gpiozero.RGBLED(red, green, blue, pin_factory=pin_factory)
        self.pattern: Pattern | None = None

    def show(self, pattern: Pattern) -> None:
        """Switch to `pattern` (a no-op if it is already showing)."""
        if pattern is self.pattern:
            return
        look = pattern.value
        try:
            if look.blinks:
                self._led.blink(on_time=look.on_s, off_time=look.off_s, on_color=look.colour,
                                off_color=(0, 0, 0), background=True)
            else:
                self._led.color = look.colour
            self.pattern = pattern
        except Exception as e:
            log.error("status LED: cannot show %s: %s", pattern.name.lower(), e)

    def close(self) -> None:
        try:
            self._led.off()
        finally:
            self._led.close()
