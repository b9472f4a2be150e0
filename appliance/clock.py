"""Whether the wall clock can be trusted for a token's iat/exp. A Pi has no real-time clock:
until NTP has synchronised it, freshness comes from the challenge alone."""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from collections.abc import Callable

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


def synchronised_check(setting: Literal["auto", "yes", "no"],
                       flag: Path = TIMESYNCD_FLAG) -> Callable[[], bool]:
    """A function telling whether to check iat/exp now."""
    if setting == "yes":
        return lambda: True
    if setting == "no":
        return lambda: False
    return flag.exists
