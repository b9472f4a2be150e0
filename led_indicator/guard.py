"""The LED-follows-capture guard (invariant P2).

Every capture device is opened and closed through one `CaptureGuard`. It lights the recording LED
before the first device opens and refuses to open one while the LED is not confirmed lit; it
darkens the LED only when every device has closed, and leaves it lit if one could not close.

    guard = CaptureGuard(recording_led)
    guard.light()            # LedFault if the LED cannot be driven: nothing opens
    guard.open(camera)
    guard.close_all()
    guard.darken()           # only once nothing is open
"""
from __future__ import annotations

import logging
import threading
from typing import Protocol

from led_indicator.lights import LedFault, RecordingLed

log = logging.getLogger(__name__)


class Openable(Protocol):
    """Anything that captures: a camera or a microphone."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...


class StillOpen(Exception):
    """A device did not close, so the recording LED must stay lit."""


class CaptureGuard:
    """Opens and closes capture devices only while the recording LED is lit."""

    def __init__(self, led: RecordingLed):
        self._led = led
        self._lit = False
        self._open: list[Openable] = []
        self._lock = threading.Lock()

    @property
    def open_devices(self) -> list[str]:
        with self._lock:
            return [d.name for d in self._open]

    def light(self) -> None:
        """Light the recording LED; raises `LedFault` if it cannot be lit."""
        with self._lock:
            self._led.on()
            self._lit = True

    def open(self, device: Openable) -> None:
        """Open `device`, after confirming the LED is lit; on LedFault nothing is opened."""
        with self._lock:
            if not self._lit:
                raise LedFault("recording LED is not lit")
            self._led.confirm(True)
            # Counted as open before open() returns: a half-opened device must be closed too.
            self._open.append(device)
        device.open()

    def check(self) -> None:
        """While recording: confirm the LED is still lit (raises `LedFault` if not)."""
        with self._lock:
            self._led.confirm(True)

    def close_all(self) -> None:
        """Close every open device, newest first; raises `StillOpen` naming any that failed."""
        failed = []
        with self._lock:
            devices, self._open = list(reversed(self._open)), []
        for device in devices:
            try:
                device.close()
            except Exception as e:
                log.error("%s: could not close: %s", device.name, e)
                failed.append(device)
        if failed:
            with self._lock:
                self._open.extend(failed)
            raise StillOpen(", ".join(d.name for d in failed))

    def darken(self) -> None:
        """Switch the LED off; refuses (StillOpen) while any device is open."""
        with self._lock:
            if self._open:
                raise StillOpen(", ".join(d.name for d in self._open))
            self._lit = False
            self._led.off()
