"""The fixed period: every health message, server probe and journal release happens at
`phase + k * period` on the monotonic clock, and at no other moment (P9).

    schedule = FixedPeriod(300, "unit-7")
    await schedule.wait()        # returns at the next tick

The phase is derived from the device id, so a fleet of units does not hit the broker at once,
and a unit keeps its phase across restarts. Nothing that happens on the unit moves a tick.
"""
from __future__ import annotations

import asyncio
import hashlib
import time


class FixedPeriod:
    """Ticks every `period_s` seconds, at a phase fixed by `device_id`."""

    def __init__(self, period_s: float, device_id: str, clock=time.monotonic):
        self.period_s = period_s
        self._clock = clock
        fraction = int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:4], "big") / 2**32
        self.phase_s = fraction * period_s
        self._origin = clock()
        self._k = 0

    def next_tick(self) -> float:
        """The monotonic time of the next tick not yet waited for."""
        return self._origin + self.phase_s + self._k * self.period_s

    async def wait(self) -> float:
        """Sleep until the next tick and return its scheduled time. A tick missed because the
        loop was busy is skipped, never made up later."""
        now = self._clock()
        while self.next_tick() < now - self.period_s / 2:
            self._k += 1
        tick = self.next_tick()
        self._k += 1
        await asyncio.sleep(max(0.0, tick - now))
        return tick
