"""What an idle daemon holds in memory (bench/README.md, "idle daemon RSS"): importing the daemon
and the backends it finds by name loads no library that only some units, or only a recording,
need. Those are imported where they are used: the media libraries when a recording starts,
pyserial when the pad is on a serial line, paho-mqtt when health goes to a broker,
python-fido2 for a card that names a security key (the lab's do not), the pad service in its
own process (classcam-pinpad; in the simulator, when it runs one)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Top-level modules the daemon must not import until it needs them.
NOT_WHILE_IDLE = ("av", "numpy", "cv2", "PIL", "sounddevice", "serial", "serial_asyncio_fast",
                  "paho", "fido2", "pinpad", "evdev", "picamera2")


def _loaded(*modules: str, then: str = "") -> set[str]:
    """The top-level modules in sys.modules after importing `modules` (and running `then`) in a
    fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for name in {list(modules)!r}: importlib.import_module(name)\n"
            f"{then}\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("backend", ["appliance.pi_hardware", "hwsim.factory"])
def test_the_daemon_and_its_backend_import_no_library_an_idle_unit_does_not_use(backend):
    loaded = _loaded("appliance.cli", "appliance.daemon", backend)
    assert loaded & set(NOT_WHILE_IDLE) == set()
    assert {"appliance", "uploader", "jwt"} <= loaded  # the check sees what is imported


def test_the_pis_sound_devices_at_start_up_load_no_numpy():
    """What the Pi backend does at start-up for sound: its speaker and microphone modules, and
    PortAudio initialised (so that its first use prints nothing during a lesson, P9)."""
    loaded = _loaded("appliance.speaker", "capture.audio",
                     then="from capture import audio; audio.initialise()")
    assert loaded & set(NOT_WHILE_IDLE) == {"sounddevice"}  # PortAudio, and nothing more
