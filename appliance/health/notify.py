"""Telling systemd how the daemon is (Type=notify): READY, STATUS, WATCHDOG, STOPPING, through
systemd-python's `systemd.daemon.notify`. Off systemd ($NOTIFY_SOCKET unset) every call does
nothing.

    supervisor = Supervisor()
    supervisor.ready()
    supervisor.status("health ok")                 # on the health tick only (P9)
    task = asyncio.create_task(supervisor.watchdog(healthy))
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

try:
    from systemd import daemon as _daemon
except ImportError:  # not installed (a teacher's computer): nothing to notify
    _daemon = None


class Supervisor:
    """The daemon's side of sd_notify."""

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        """STATUS= shown by `systemctl status`: device health only, set on the tick."""
        self._send("STATUS=" + " ".join(text.split()))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_timeout(self, usec: int) -> None:
        """Ask systemd for `usec` more to finish starting (or stopping): sent while start-up
        makes progress, so a slow start is not killed and a wedged one is."""
        self._send(f"EXTEND_TIMEOUT_USEC={usec}")

    async def watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping at half of $WATCHDOG_USEC, from the event loop itself, while `healthy()`: a
        blocked loop (no stop press would be heard, P8) or a wedged uploader stops the pings and
        systemd restarts the daemon."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec <= 0:
            return
        while True:
            if healthy():
                self._send("WATCHDOG=1")
            await asyncio.sleep(usec / 2e6)

    def _send(self, state: str) -> None:
        if _daemon is not None and os.environ.get("NOTIFY_SOCKET"):
            _daemon.notify(state)
