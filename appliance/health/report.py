"""The health message a unit publishes, and how IT's tools read it back.

    report = HealthReport(device="unit-7", version="0.1.0", period_s=300, uptime_s=3600, ...)
    payload = report.encode()        # always SIZE bytes, whatever it says
    fields = decode(payload)         # a dict, or ValueError with the reason

What a reader may rely on: JSON with the keys of `HealthReport.fields()`; `status` is "ok",
"fault" or (the last will) "offline"; `checks` maps each name in CHECKS to "ok" or
"fault: <reason>". Every number is rounded (uptime to the period, free disk to DISK_STEP_MB, the
backlog to a bucket, times to the period) and the JSON is padded with spaces to SIZE bytes, so
neither the size nor the precision of a message depends on what happened on the unit (P9).
Never in it: a teacher, a recording, whether one runs or ran, start or stop times, a file.
"""
from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from collections.abc import Iterable, Mapping

VERSION = 1
SIZE = 1536
CHECKS = ("camera", "microphone", "speaker", "led", "clock", "server", "storage", "software")
REASON_MAX = 100
DISK_STEP_MB = 256
BACKLOG_BUCKETS = ((0, "none"), (100 * 2**20, "under 100 MB"), (2**30, "under 1 GB"))
BACKLOG_MAX = "1 GB or more"

_ID = re.compile(r"\b[0-9a-f]{32}\b")       # recording ids
_PATH = re.compile(r"(?<![\w.])/[^\s:;,'\"]+")  # file paths (spool directories name recordings)


@dataclass(frozen=True)
class HealthReport:
    """One health message."""

    device: str
    version: str
    period_s: float
    uptime_s: float
    disk_free_bytes: int
    backlog_bytes: int
    checks: Mapping[str, str | None]   # name -> None (ok) or the fault's reason
    last_server_contact: float | None  # wall-clock seconds, or None: never
    at: float                          # wall-clock seconds of this tick

    @property
    def status(self) -> str:
        return "fault" if any(r is not None for r in self.checks.values()) else "ok"

    def fields(self) -> dict:
        """The JSON object, every value already rounded."""
        p = self.period_s
        return {
            "v": VERSION,
            "device": self.device,
            "status": self.status,
            "version": self.version,
            "period_s": _number(p),
            "at": _iso(self.at, p),
            "uptime_s": _number(round(self.uptime_s / p) * p),
            "disk_free_mb": int(self.disk_free_bytes // 2**20 // DISK_STEP_MB * DISK_STEP_MB),
            "backlog": backlog_bucket(self.backlog_bytes),
            "last_server_contact": (_iso(self.last_server_contact, p)
                                    if self.last_server_contact is not None else None),
            "checks": {name: _check_text(self.checks.get(name)) for name in CHECKS},
        }

    def encode(self) -> bytes:
        """The message: JSON padded with spaces to exactly SIZE bytes."""
        return pad(json.dumps(self.fields(), separators=(",", ":")).encode())


def offline_message(device: str, version: str) -> bytes:
    """The last will: published by the broker when the unit's connection is lost."""
    return pad(json.dumps({"v": VERSION, "device": device, "status": "offline",
                           "version": version}, separators=(",", ":")).encode())


def pad(payload: bytes) -> bytes:
    if len(payload) > SIZE:  # cannot happen: every field is bounded (tests/test_health_report)
        raise ValueError(f"health message of {len(payload)} bytes is over {SIZE}")
    return payload + b" " * (SIZE - len(payload))


def decode(payload: bytes) -> dict:
    """A health message or last will as a dict; ValueError naming what is wrong."""
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise ValueError(f"not a version {VERSION} health message")
    if fields.get("status") not in ("ok", "fault", "offline"):
        raise ValueError(f"unknown status {fields.get('status')!r}")
    if fields["status"] != "offline" and not isinstance(fields.get("checks"), dict):
        raise ValueError("no checks")
    return fields


def scrub(reason: str, secrets: Iterable[str] = ()) -> str:
    """`reason` on one line, at most REASON_MAX characters of printable ASCII (anything else,
    and the quote and backslash JSON would escape, becomes "?", so a reason's size in the message
    is its length), without recording ids, file paths or any of `secrets` (the enrolled
    teachers' ids)."""
    text = " ".join(str(reason).split())
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<teacher>")
    text = _PATH.sub("<path>", _ID.sub("<id>", text))
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


def backlog_bucket(size: int) -> str:
    for upper, name in BACKLOG_BUCKETS:
        if size <= upper:
            return name
    return BACKLOG_MAX


def _check_text(reason: str | None) -> str:
    return "ok" if reason is None else f"fault: {scrub(reason) or 'unknown'}"


def _iso(wall: float, period_s: float) -> str:
    rounded = math.floor(wall / period_s) * period_s
    return datetime.datetime.fromtimestamp(int(rounded), datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 3)
