"""Errors of capture devices. A camera or microphone is anything with `name`, `open()`,
`close()` and `read()` (see `capture.pipeline.Camera` and `Microphone`); every open and close goes
through `led_indicator.guard.CaptureGuard`, so the recording LED follows the devices (P2)."""
from __future__ import annotations


class CaptureError(Exception):
    """A camera, microphone, encoder or segment write failed; the recording stops and the LED
    shows a fault."""
