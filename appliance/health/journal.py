"""The journal: structured entries through systemd-python under systemd, plain lines on stderr
elsewhere, and - while the daemon serves - every line held back until the next health tick.

    handler = journal_handler()          # JournaldHandler under systemd, else stderr lines
    held = HeldLines(handler)            # installed by the daemon once it serves
    held.write_out()                       # on each tick of the fixed period (health.service)

Why hold lines: the moment a line is written is itself information. A fault noticed because a
recording was running, a refused token, an upload that failed because there was something to
send: written at once, each would say when someone used the unit (P9). Released on the fixed
period, every line (library lines included) carries the tick's time, not the event's.

Each entry carries PRIORITY, CODE_FILE, CODE_LINE, CODE_FUNC, SYSLOG_IDENTIFIER=classcam and a
stable CLASSCAM_EVENT naming the kind of line (README, "The journal"), and nothing else: no
arguments or locals go to the journal as fields.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections import deque

# The kinds of line IT may want to select (`journalctl CLASSCAM_EVENT=upload-fault`), by the
# logger and the start of the line's template. Any other line's code is its logger and a
# hash of its template: stable for as long as the line's wording is.
EVENTS = (
    ("appliance.unit", "fault: ", "fault"),
    ("appliance.unit", "token refused", "token-refused"),
    ("appliance.unit", "recording failed", "internal-error"),
    ("classcam", "config", "config-error"),
    ("classcam", "hardware", "hardware-error"),
    ("classcam", "device key", "device-key-error"),
    ("classcam", "ready", "ready"),
    ("health", "fault: upload", "upload-fault"),
    ("health", "upload: working again", "upload-working"),
    ("health", "fault: clock", "clock-fault"),
    ("health", "clock: synchronised", "clock-ok"),
    ("appliance.health.publisher", "cannot reach the MQTT broker", "broker-unreachable"),
    ("appliance.health.publisher", "MQTT broker reachable", "broker-reachable"),
    ("health", "held lines dropped", "lines-dropped"),
    ("appliance.padlink", "pad link", "pad-link"),
    ("appliance.recordings", "recovered", "recording-recovered"),
    ("uploader.spool", "spool", "spool-error"),
    ("uploader.worker", "uploader stopped", "internal-error"),
    ("led_indicator", "", "led"),
)
SYSLOG_IDENTIFIER = "classcam"
HELD_MAX = 1000  # lines held in one period at most; more are counted, not kept


def event_code(record: logging.LogRecord) -> str:
    """The stable CLASSCAM_EVENT of a log record."""
    template = str(record.msg)
    for logger, prefix, code in EVENTS:
        if (record.name == logger or record.name.startswith(logger + ".")) \
                and template.startswith(prefix):
            return code
    digest = hashlib.sha256(f"{record.name}\0{template}".encode()).hexdigest()[:8]
    return f"{record.name.replace('.', '-')}-{digest}"


def under_systemd() -> bool:
    """stderr is connected to the journal (systemd sets JOURNAL_STREAM to its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def journal_handler() -> logging.Handler:
    """Structured journal entries under systemd; plain `LEVEL logger: message` lines on stderr
    anywhere else (the tests read those)."""
    if under_systemd():
        try:
            return JournaldHandler()
        except ImportError:  # systemd-python missing: stderr still reaches the journal
            pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


class JournaldHandler(logging.Handler):
    """Sends each record to journald with the fields named in the module's docstring."""

    def __init__(self) -> None:
        super().__init__()
        from systemd import journal
        self._send = journal.send
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(self.format(record).replace("\n", " | "),
                       PRIORITY=str(_priority(record.levelno)),
                       CLASSCAM_EVENT=event_code(record),
                       CODE_FILE=record.pathname, CODE_LINE=record.lineno,
                       CODE_FUNC=record.funcName, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        except Exception:
            self.handleError(record)


def hold_lines() -> HeldLines:
    """From now on, hold every line of the root logger until `write_out()` (the daemon's
    health ticks); `stop()` releases what is held and writes straight through again."""
    root = logging.getLogger()
    target = root.handlers[0] if root.handlers else journal_handler()
    held = HeldLines(target)
    root.handlers[:] = [held]
    return held


def stop_holding() -> None:
    """Write out whatever is held and stop holding (idempotent; for every way out)."""
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, HeldLines):
            handler.stop()


class HeldLines(logging.Handler):
    """Keeps every record until `write_out()`, then hands them to `target` in order. Thread-safe:
    records come from the loop, the uploader and library threads."""

    def __init__(self, target: logging.Handler, limit: int = HELD_MAX):
        super().__init__()
        self.target = target
        self._held: deque[logging.LogRecord] = deque()
        self._dropped = 0
        self._limit = limit
        self._held_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted now: the arguments may change or hold objects that should not live on.
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        with self._held_lock:
            if len(self._held) >= self._limit:
                self._dropped += 1
                return
            self._held.append(record)

    def stop(self) -> None:
        """Release everything and put the target back on the root logger."""
        root = logging.getLogger()
        if self in root.handlers:
            root.handlers[:] = [self.target]
        self.write_out()

    def write_out(self) -> None:
        """Write out everything held (called on a tick, and on the way out)."""
        with self._held_lock:
            records, self._held = list(self._held), deque()
            dropped, self._dropped = self._dropped, 0
        for record in records:
            self.target.handle(record)
        if dropped:
            note = logging.LogRecord("health", logging.WARNING, __file__, 0,
                                     "held lines dropped: %d in one period", (dropped,), None)
            self.target.handle(note)


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7
