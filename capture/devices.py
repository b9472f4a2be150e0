"""Errors of capture devices. A camera or microphone is anything with `name`, `open()`,
`close()` and `read()` (see `capture.pipeline.Camera` and `Microphone`); every open and close goes
through `led_indicator.guard.CaptureGuard`, so the recording LED follows the devices (P2).

A device's `read(..., timeout)` returns or raises `CaptureError` within `timeout`, whatever the
hardware does. A device whose read has still not returned refuses to `close()` (`CaptureError`):
it may still be capturing, so the guard keeps the recording LED lit."""
from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class CaptureError(Exception):
    """A camera, microphone, encoder or segment write failed; the recording stops and the LED
    shows a fault."""


def without_frames(error: E) -> E:
    """`error` as a reason to keep: its type and message, without its traceback or the
    exceptions it was chained to. A kept traceback holds the failed thread's frames, and with
    them its locals (a recorder, live encoders and their threads) until the cycle collector
    happens to run."""
    error.__traceback__ = None
    error.__cause__ = error.__context__ = None
    return error
