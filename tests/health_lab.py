"""Helpers for the health tests: a unit whose journal lines are timed as they arrive, a broker
fixture, and a subscriber that keeps every health message with its arrival time."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator

import pytest

from hwsim.lab import Lab, RunningUnit
from tests.mqtt_broker import IT_USER, Broker, Client, mosquitto_available


@pytest.fixture
def broker(short_dir) -> Iterator[Broker]:
    """Mosquitto with TLS, passwords and the README's ACL, for units sim-unit-1 .. -3."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (./dev installs it)")
    running = Broker.start(short_dir / "broker", units=[f"sim-unit-{i}" for i in (1, 2, 3)])
    yield running
    running.stop()


class JournalTap:
    """Reads a daemon's stderr line by line, keeping each line's arrival (monotonic) time, and
    copies it to the lab's daemon.log as `Lab.daemon` would."""

    def __init__(self, stream, log_path: Path):
        self.lines: list[tuple[float, str]] = []
        self._stream = stream
        self._log = open(log_path, "ab")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
            self._log.write(raw)
            self._log.flush()

    def close(self) -> None:
        self._thread.join(5)
        self._log.close()


@contextlib.contextmanager
def timed_daemon(lab: Lab, env: dict | None = None) -> Iterator[tuple[RunningUnit, JournalTap]]:
    """`Lab.daemon`, with the journal read through a pipe so every line's time is known."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    if not env or "NOTIFY_SOCKET" not in env:
        environment.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "run", "--hw", "sim",
                             "--config", str(lab.config_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=environment)
    tap = JournalTap(proc.stderr, lab.log_path)
    unit = RunningUnit(lab, proc)
    try:
        unit.connect(30)
        yield unit, tap
    finally:
        unit.terminate()
        tap.close()


def it_watching(broker: Broker) -> Client:
    """IT's account, subscribed to every unit's health."""
    it = broker.client(IT_USER)
    assert it.subscribe("classcam/+/health") == [1]
    return it


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)
