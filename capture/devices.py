"""Errors of capture devices, and the threads that bound their calls. A camera or microphone is
anything with `name`, `open()`, `close()` and a way to deliver (see `capture.pipeline.Camera` and
`Microphone`); every open and close goes through `led_indicator.guard.CaptureGuard`, so the
recording LED follows the devices (P2). A close that does not return in time (`bounded_close`)
is a `CaptureError`: the device stays counted as open.

A device's `read(..., timeout)` returns or raises `CaptureError` within `timeout`, whatever the
hardware does. A device whose read has still not returned refuses to `close()` (`CaptureError`):
it may still be capturing, so the guard keeps the recording LED lit."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E", bound=BaseException)
T = TypeVar("T")


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


def bounded_close(name: str, close: Callable[[], None], timeout: float) -> None:
    """Run a device's `close()`, waiting at most `timeout`: a close that has not returned by
    then is a `CaptureError` (the device may still be open), and is left to finish on a daemon
    thread of its own, which cannot hold up the process's exit."""
    closing = ReadThread[None](name)
    try:
        closing.call(close, timeout, "close did not return")
    finally:
        closing.close()


class ReadThread(Generic[T]):
    """Runs a device's blocking reads, one at a time, on a daemon thread of its own, so that the
    caller can stop waiting for one (and a read that never returns cannot hold up the process's
    exit)."""

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], T] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._result: T | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def call(self, read: Callable[[], T], timeout: float, late: str = "no frame") -> T:
        """`read()`'s result, or `CaptureError` ("<name>: <late> within <timeout> s") if it did
        not return within `timeout`."""
        with self._lock:
            if self._closed:
                raise CaptureError(f"{self._name} is not open")
            if not self._idle.is_set():
                raise CaptureError(f"{self._name}: an earlier read has still not returned")
            self._idle.clear()
            self._jobs.put(read)
        if not self._idle.wait(timeout):
            raise CaptureError(f"{self._name}: {late} within {timeout:g} s")
        result, error = self._result, self._error
        self._result = self._error = None
        if isinstance(error, CaptureError):
            raise error
        if error is not None:
            raise CaptureError(f"{self._name}: {error}")
        return result  # type: ignore[return-value]  # set by a read that returned

    def close(self) -> bool:
        """End the thread; False (and nothing ended) while a read has not returned."""
        with self._lock:
            if not self._idle.is_set():
                return False
            self._closed = True
            self._jobs.put(None)
            return True

    def _run(self) -> None:
        while (read := self._jobs.get()) is not None:
            try:
                self._result, self._error = read(), None
            except Exception as e:  # handed to the caller, without this thread's frames
                self._result, self._error = None, without_frames(e)
            del read  # holds the capture: nothing of it stays here between reads
            self._idle.set()
