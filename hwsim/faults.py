"""Fault switches: a test or a person turns a fault on, the simulated part starts failing."""
from __future__ import annotations

import threading

KNOWN = frozenset({"led", "speaker", "camera", "microphone", "camera_close", "microphone_close",
                   "camera_stall", "microphone_error", "disk_full", "camera_drop",
                   "camera_close_hang"})


class Faults:
    """A thread-safe set of the faults that are on."""

    def __init__(self) -> None:
        self._on: set[str] = set()
        self._lock = threading.Lock()

    def set(self, name: str, on: bool = True) -> None:
        if name not in KNOWN:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(KNOWN))})")
        with self._lock:
            (self._on.add if on else self._on.discard)(name)

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._on

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._on)
