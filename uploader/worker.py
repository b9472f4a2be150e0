"""The upload loop: the oldest sealed file first, retried until the server confirms it (P7).

    uploader = Uploader(spool, client, retry_max_s=300, hold_s=3600, on_change=show)
    uploader.start()          # a thread; wakes whenever the spool queues a file
    ...
    uploader.stop()

A passing failure (`RetryLater`: the network, a timeout, 5xx, 429) is retried with exponential
backoff and full jitter, never sooner than the server's Retry-After, for as long as it takes. A
file the server refuses (`Refused`, a 4xx) or stores with another hash is kept and tried again
after `hold_s`: no file ever reaches a state where it is given up on. Only a file whose hash the
server confirmed is deleted, by `Spool.confirm`. A file whose recording the teacher discards
while it is sent is cut off at its next block and dropped quietly: that is no fault.

The uploader shows a sign of life (`alive`) while it waits in short steps and each time bytes of
a file move, so a slow upload is not mistaken for a hung one, and a hung one still is.


The uploader writes nothing to the journal about uploads: when they happen is when recordings
were made (P9). It keeps what happened since the last health tick (`take_period`) and, on that
fixed clock, reaches the server with `probe()` whether or not anything waits; `health.service`
reports both, and writes the journal's upload lines, on the tick.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from uploader.client import (Gone, Refused, RetryLater, Stored, UploadClient, UploadError,
                             UploadTarget)
from uploader.spool import Backlog, FileState, Sending, Spool, SpoolFile

log = logging.getLogger(__name__)

STEP_S = 1.0           # waits are cut into steps this long, so stop() and the watchdog see us
IDLE_POLL_S = 30.0     # even with nothing to do, look at the spool this often


@dataclass(frozen=True)
class PeriodNews:
    """What the server said since the last health tick."""

    answered: bool         # a request (an upload or the probe) got a good answer
    failure: str | None    # the first failure's reason


@dataclass(frozen=True)
class UploadStatus:
    """What the status light and health report need: how much waits, and whether it works."""

    backlog: Backlog
    failing: str | None  # why the last attempt failed; None while uploads work


class _Stopping(Exception):
    """The daemon is shutting down: no further attempt."""


class Uploader:
    """Runs the upload loop on its own thread."""

    def __init__(self, spool: Spool, client: UploadClient, retry_max_s: float = 300,
                 hold_s: float = 3600,
                 on_change: Callable[[UploadStatus], None] = lambda status: None,
                 probe_client: UploadClient | None = None):
        self._spool = spool
        self._client = client
        self._probe_client = probe_client or client
        self._period_lock = threading.Lock()
        self._news = PeriodNews(False, None)
        self._attempted = False     # an upload reached for the server since the last probe
        self._not_before = 0.0      # the server's Retry-After, for the probe too
        self._retry_max_s = retry_max_s
        self._hold_s = hold_s
        self._on_change = on_change
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._failing: str | None = None    # what status() says: `_retrying`, or a held reason
        self._retrying: str | None = None   # why the last attempt failed, until the server answers
        self._reported: UploadStatus | None = None
        # Files the server refused (by seq) -> (when to try them again, why).
        self._held: dict[int, tuple[float, str]] = {}
        self.heartbeat = time.monotonic()
        spool.listen(self.wake)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current request (bounded by the client's timeouts). A file cut off
        mid-send is simply sent again, or resumed, next time."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """Something was queued: look at the spool now."""
        self._wake.set()

    def alive(self, within_s: float) -> bool:
        """The thread runs and showed a sign of life in the last `within_s` seconds."""
        return self._thread.is_alive() and time.monotonic() - self.heartbeat < within_s

    def status(self) -> UploadStatus:
        return UploadStatus(self._spool.backlog(), self._failing)

    # -- the health clock's hooks -------------------------------------------------------------

    def probe(self) -> None:
        """Called on each health tick (from a thread of its own): reach the server unless an
        upload already did since the last probe, or the server asked to wait."""
        with self._period_lock:
            attempted, self._attempted = self._attempted, False
        if attempted or time.monotonic() < self._not_before:
            return
        try:
            self._probe_client.probe()
        except UploadError as e:
            self._note(failure=e.reason, retry_after=getattr(e, "retry_after", None))
        else:
            self._note(answered=True)

    def take_period(self) -> PeriodNews:
        """What happened since the last call (the health tick's news), and start afresh."""
        with self._period_lock:
            news, self._news = self._news, PeriodNews(False, None)
        return news

    def _note(self, answered: bool = False, failure: str | None = None,
              retry_after: float | None = None) -> None:
        with self._period_lock:
            self._news = PeriodNews(self._news.answered or answered,
                                    self._news.failure or failure)
            if retry_after:
                self._not_before = max(self._not_before, time.monotonic() + retry_after)

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._report()
            while not self._stopping.is_set():
                self._beat()
                file = self._spool.next_sealed(self._still_held())
                if file is None:
                    self._idle()
                    continue
                sending = self._spool.begin_send(file)
                if sending is None:  # discarded since next_sealed
                    continue
                try:
                    if not self._upload(file, sending):
                        break
                finally:
                    self._spool.end_send(sending)  # only now may a discarded file be shredded
        except Exception:  # a bug must not silently end uploads: the watchdog sees the thread die
            log.exception("uploader stopped by an unexpected error")
            raise

    def _upload(self, file: SpoolFile, sending: Sending) -> bool:
        """Send one file until the server answers (or its recording is discarded); False when
        the uploader is stopping."""
        try:
            stored = self._send(file, sending)
        except _Stopping:
            self._spool.mark(file, FileState.SEALED)
            return False
        except Refused as e:
            self._retrying = None
            if not sending.withdrawn.is_set():  # a discarded file's refusal says nothing
                self._hold(file, f"server refused a file: {e.reason}")
            return True
        except Gone as e:
            if not sending.withdrawn.is_set() and self._spool.knows(file.recording_id,
                                                                    file.name):
                self._hold(file, f"a sealed file cannot be read: {e.reason}")
            return True
        self._retrying = None
        if stored.sha256 == file.sha256:
            # Uploads work: say so before the file leaves the backlog, so that no status shows
            # an empty backlog as still failing.
            self._held.pop(file.seq, None)
            self._update_failing()
        if self._spool.confirm(file, stored.sha256):
            self._working()
        elif not sending.withdrawn.is_set():
            self._hold(file, "server stored different bytes than were sent")
        return True

    def _send(self, file: SpoolFile, sending: Sending) -> Stored:
        target = UploadTarget(file.teacher_id, file.recording_id, file.name, file.path,
                              file.sha256, file.size)
        retrying = Retrying(
            retry=retry_if_exception_type(RetryLater),
            wait=_Backoff(self._retry_max_s),
            sleep=lambda seconds: self._sleep(seconds, until=sending.withdrawn),
            before_sleep=self._attempt_failed,
            reraise=True)
        return retrying(self._attempt, target, sending)

    def _attempt(self, target: UploadTarget, sending: Sending) -> Stored:
        if self._stopping.is_set():
            raise _Stopping()
        self._beat()
        with self._period_lock:
            self._attempted = True
        # Each block sent is a sign of life; a discard stops the body at the next block.
        stored = self._client.put(target, progress=self._beat, cancel=sending.withdrawn)
        self._note(answered=True)
        return stored

    def _attempt_failed(self, state: RetryCallState) -> None:
        assert state.outcome is not None  # tenacity calls before_sleep after an attempt
        error = state.outcome.exception()
        reason = getattr(error, "reason", str(error))
        self._note(failure=reason, retry_after=getattr(error, "retry_after", None))
        if reason != self._retrying:
            self._retrying = reason
            self._report()

    def _working(self) -> None:
        """A file was confirmed. Uploads work again, unless a refused file is still held."""
        self._report()

    def _hold(self, file: SpoolFile, reason: str) -> None:
        self._spool.mark(file, FileState.SEALED)
        self._held[file.seq] = (time.monotonic() + self._hold_s, reason)
        self._note(failure=reason)
        self._report()

    def _still_held(self) -> frozenset[int]:
        now = time.monotonic()
        return frozenset(seq for seq, (until, _) in self._held.items() if until > now)

    def _idle(self) -> None:
        self._report()
        now = time.monotonic()
        wait = min([IDLE_POLL_S] + [until - now for until, _ in self._held.values() if until > now])
        self._sleep(wait, wake=True)
        self._wake.clear()

    def _sleep(self, seconds: float, wake: bool = False,
               until: threading.Event | None = None) -> None:
        """Wait in short steps (the heartbeat keeps going); stop() ends it, so does wake()
        when `wake` is set, and so does `until` (within a step)."""
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and not (until is not None and until.is_set()):
            self._beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            if wake:
                if self._wake.wait(min(left, STEP_S)):
                    return
            else:
                self._stopping.wait(min(left, STEP_S))

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _update_failing(self) -> None:
        """Why uploads fail now: the last attempt's passing failure, else the newest refusal
        still held. A held file whose recording was discarded holds nothing any more."""
        if self._held:
            waiting = {f.seq for f in self._spool.files()
                       if f.state in (FileState.SEALED, FileState.UPLOADING)}
            self._held = {seq: v for seq, v in self._held.items() if seq in waiting}
        held = [why for _, why in self._held.values()]
        self._failing = self._retrying or (held[-1] if held else None)

    def _report(self) -> None:
        """Tell `on_change` if the status changed."""
        self._update_failing()
        status = self.status()
        if status != self._reported:
            self._reported = status
            self._on_change(status)


class _Backoff:
    """Exponential backoff with full jitter, capped at `max_s`; never sooner than the server's
    Retry-After."""

    def __init__(self, max_s: float):
        self._jittered = wait_random_exponential(multiplier=1, max=max_s)

    def __call__(self, state: RetryCallState) -> float:
        wait = self._jittered(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait
