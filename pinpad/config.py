"""The pad service's configuration, /etc/classcam/pinpad.toml (every key optional):

    socket = "/run/classcam/pinpad.sock"       # the unit's pad link
    keystore = "/var/lib/classcam-pinpad"      # teachers, cards, sealed keys, wrong-PIN counts
    keypad = "auto"                            # "auto", a /dev/input path, or a device name
    security_keys = true                       # look for FIDO2 security keys (USB HID)
    feedback = "tones"                         # or "none"
    challenge_wait_s = 3.0
    result_timeout_s = 10.0
    entry_timeout_s = 30.0
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATH = Path("/etc/classcam/pinpad.toml")


class PadConfig(BaseModel):
    """One pad service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    socket: Path = Path("/run/classcam/pinpad.sock")
    keystore: Path = Path("/var/lib/classcam-pinpad")
    keypad: str = Field(default="auto", min_length=1)
    security_keys: bool = True
    feedback: Literal["tones", "none"] = "tones"
    challenge_wait_s: float = Field(default=3.0, gt=0, le=60)
    result_timeout_s: float = Field(default=10.0, gt=0, le=120)
    entry_timeout_s: float = Field(default=30.0, gt=0, le=600)


class ConfigError(Exception):
    """The configuration file cannot be used; the message says why, in one line."""


def load(path: Path) -> PadConfig:
    """Read `path`; a missing file is the defaults."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return PadConfig()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return PadConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
