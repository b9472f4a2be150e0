"""The real `Unit` on simulated hardware inside the test's own process, for tests that reach
into it (a spool that fails on purpose, the timeline as objects, the recorder it holds).

    unit, hw, spool = sim_unit(lab_template, root)
    await unit.press()
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.config import parse
from appliance.hardware import Hardware
from appliance.notice import Notices, Sound
from appliance.roster import Roster
from appliance.unit import Unit
from hwsim.factory import make_sim_hardware
from hwsim.lab import DEVICE_ID
from uploader.spool import Spool

# A short silence for each notice: the order of events matters here, not the words.
NOTICES = Notices(*(Sound(label, b"\0\0" * 800, 16000)
                    for label in ("start", "stop", "discard", "full", "paused")))


def sim_unit(lab_template, root: Path, spool: Spool | None = None
             ) -> tuple[Unit, Hardware, Spool]:
    """A unit enrolled like `lab_template`, its state under `root`, small fast frames; `spool`
    replaces the real one (e.g. a subclass that fails on purpose)."""
    config = parse({
        "device": {"id": DEVICE_ID, "roster_dir": str(lab_template.roster_dir),
                   "state_dir": str(root / "var")},
        "capture": {"width": 160, "height": 120, "segment_seconds": 1,
                    "x264_preset": "ultrafast", "min_free_mb": 1},
        "clock": {"synchronised": "yes"},
        "sim": {"realtime": False, "speed": 100.0}})
    hw = make_sim_hardware(config)
    spool = spool or Spool(root / "var" / "spool")
    unit = Unit(config, Roster(config.device.roster_dir), spool, hw, NOTICES,
                Ed25519PrivateKey.generate(), lambda: True)
    return unit, hw, spool
