"""The simulator's timeline: one JSON object per line, each with `t` from CLOCK_MONOTONIC.

    tl = Timeline(path)
    tl("pin", name="recording_led", value=1.0)

    for event in read(path): ...

Tests prove P1-P4 from this record rather than from the code that should keep them. Each line is
written and flushed as it happens, so a killed daemon leaves every event before its death. The
monotonic clock is system-wide, so a test process can compare its own times with these.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator


class Timeline:
    """Appends events to a JSON-lines file (or only keeps them in memory if `path` is None)."""

    def __init__(self, path: Path | None = None):
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self.events: list[dict] = []

    def __call__(self, event: str, **fields: Any) -> None:
        with self._lock:
            record = {"t": time.monotonic(), "ev": event, **fields}
            self.events.append(record)
            if self._file is not None:
                self._file.write(json.dumps(record, default=str) + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read(path: Path) -> Iterator[dict]:
    """The events of a timeline file, in order; a torn last line (a killed writer) is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue
