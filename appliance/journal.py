"""Logging to the journal: one line per event. Under systemd, structured entries through
systemd-python (PRIORITY, CLASSCAM_EVENT, CODE_FILE/LINE; see `health.journal`); elsewhere plain
`LEVEL logger: message` lines on stderr."""
from __future__ import annotations

import logging
import threading

from appliance.health.journal import journal_handler


# The daemon's own loggers, which say what IT needs at INFO. Every other logger (picamera2 says
# "Camera started" at INFO, paho, urllib3) is held to WARNING: a library's line written when a
# lesson starts or stops would say when it did (P9).
OWN_LOGGERS = ("classcam", "health", "appliance", "capture", "uploader", "led_indicator",
               "formats")


def setup(level: int = logging.INFO) -> None:
    """Send the root logger's lines to the journal (or stderr off systemd). Python's warnings
    and a thread's dying traceback go the same way, so that they too wait for the health tick
    instead of reaching stderr when they happen (P9). Libraries log warnings and errors only;
    the daemon's own loggers log at `level`."""
    root = logging.getLogger()
    root.handlers[:] = [journal_handler()]
    root.setLevel(max(level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)
    threading.excepthook = _thread_died


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    if args.exc_value is None:  # no exception object to show: say what died, and of what
        logging.getLogger("classcam").error("%s stopped by an unexpected %s", name,
                                            args.exc_type.__name__)
        return
    logging.getLogger("classcam").error("%s stopped by an unexpected error", name,
                                        exc_info=(args.exc_type, args.exc_value,
                                                  args.exc_traceback))
