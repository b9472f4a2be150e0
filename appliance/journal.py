"""Logging to the journal: one line per event, with the syslog priority journald understands."""
from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"


def setup(level: int = logging.INFO) -> None:
    """Log to stderr; under systemd (JOURNAL_STREAM set) with `<N>` priority prefixes."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(name)s: %(message)s"
    if "JOURNAL_STREAM" in os.environ:
        handler.setFormatter(_JournalFormatter(fmt))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s " + fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
