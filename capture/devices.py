"""Capture devices as the appliance sees them: something with a name that opens and closes.

Frames and samples come in a later stage; what matters here is that every open and close goes
through `led_indicator.guard.CaptureGuard`, so the recording LED follows the devices (P2).
"""
from __future__ import annotations

from typing import Protocol


class CaptureError(Exception):
    """A camera or microphone failed; the recording stops and the LED shows a fault."""


class CaptureDevice(Protocol):
    """A camera or microphone. `open()` starts capture; `close()` stops it and releases it."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...
