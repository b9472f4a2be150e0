"""Logging to the journal: one line per event. Under systemd, structured entries through
systemd-python (PRIORITY, CLASSCAM_EVENT, CODE_FILE/LINE; see `health.journal`); elsewhere plain
`LEVEL logger: message` lines on stderr."""
from __future__ import annotations

import logging

from health.journal import journal_handler


def setup(level: int = logging.INFO) -> None:
    """Send the root logger's lines to the journal (or stderr off systemd)."""
    root = logging.getLogger()
    root.handlers[:] = [journal_handler()]
    root.setLevel(level)
