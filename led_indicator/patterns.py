"""The unit's light patterns, in one table so the README and the code cannot disagree.

The unit has two lights. The **recording LED** (red, on its own pin) means exactly one thing: a
camera or microphone may be open. It is lit before either opens and dark only after both have
closed (P2), and it never blinks. The **status LED** (RGB) shows everything else:

| pattern   | status LED                         | recording LED |
|-----------|------------------------------------|---------------|
| idle      | dim green, steady                  | off           |
| armed     | amber, blinking 0.5 s on/0.5 s off | off           |
| starting  | red, steady (notice playing)       | on            |
| recording | red, steady                        | on            |
| paused    | amber, steady (camera and microphone closed; the recording waits) | off |
| stopping  | amber, fast blink 0.1 s/0.1 s      | on until the last device has closed |
| uploading | blue, slow blink 1 s on/2 s off    | off           |
| upload retrying | blue, fast blink 0.25 s/0.25 s (server unreachable or refusing; recordings kept) | off |
| fault     | magenta, blinking 0.25 s/0.25 s    | off, unless a device failed to close |

Uploading shows only while the unit is idle; a fault of the unit itself shows before it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

Colour = tuple[float, float, float]

OFF: Colour = (0.0, 0.0, 0.0)
RED: Colour = (1.0, 0.0, 0.0)
AMBER: Colour = (1.0, 0.5, 0.0)
DIM_GREEN: Colour = (0.0, 0.15, 0.0)
BLUE: Colour = (0.0, 0.0, 1.0)
MAGENTA: Colour = (1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Look:
    """How the status LED shows a pattern: steady `colour`, or blinking `on_s`/`off_s`. `means`
    keeps two patterns that look alike (starting, recording) distinct members of `Pattern`."""

    means: str
    colour: Colour
    on_s: float | None = None
    off_s: float | None = None

    @property
    def blinks(self) -> bool:
        return self.on_s is not None


class Pattern(enum.Enum):
    """What the status LED shows; `value` is its look."""

    IDLE = Look("idle", DIM_GREEN)
    ARMED = Look("armed", AMBER, 0.5, 0.5)
    STARTING = Look("starting", RED)
    RECORDING = Look("recording", RED)
    PAUSED = Look("paused", AMBER)
    STOPPING = Look("stopping", AMBER, 0.1, 0.1)
    UPLOADING = Look("uploading", BLUE, 1.0, 2.0)
    UPLOAD_RETRYING = Look("upload retrying", BLUE, 0.25, 0.25)
    FAULT = Look("fault", MAGENTA, 0.25, 0.25)
