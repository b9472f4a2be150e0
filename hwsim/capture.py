"""Simulated camera and microphone (this stage: they open and close, and say so)."""
from __future__ import annotations

from capture.devices import CaptureError
from hwsim.faults import Faults
from hwsim.timeline import Timeline


class SimDevice:
    """A capture device whose open and close reach the timeline. The `open` event is written
    before the device would start capturing, the `close` event after it has stopped, so the
    record errs on the side of "open" when P2 is checked."""

    def __init__(self, name: str, timeline: Timeline, faults: Faults):
        self.name = name
        self.is_open = False
        self._timeline = timeline
        self._faults = faults

    def open(self) -> None:
        self._timeline("device", device=self.name, phase="open")
        self.is_open = True
        if self.name in self._faults:
            self._timeline("device", device=self.name, phase="failed")
            raise CaptureError(f"{self.name}: simulated failure to open")

    def close(self) -> None:
        if self.name == "camera" and "camera_close" in self._faults:
            raise CaptureError("camera: simulated failure to close")
        self.is_open = False
        self._timeline("device", device=self.name, phase="close")
