"""A private PulseAudio server for a test, with ALSA PCMs named as IT names a unit's devices in
asound.conf, so that sounddevice finds them by name (PortAudio lists ALSA PCMs that have a
hint)."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def pulse_server(root: Path, monkeypatch, modules: list[str], pcms: dict[str, str]
                 ) -> Iterator[None]:
    """Run PulseAudio with `modules` loaded; `pcms` maps an ALSA PCM name to the PulseAudio
    sink or source it reaches. $HOME points at `root` (for ~/.asoundrc) for the test and the
    processes it starts."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("PulseAudio is not installed (./dev installs it)")
    runtime = root / "pulse"
    runtime.mkdir()
    for k in ("PULSE_RUNTIME_PATH", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, str(runtime))
    monkeypatch.setenv("HOME", str(root))
    (root / ".asoundrc").write_text("".join(
        f'pcm.{name} {{\n  type pulse\n  device {target}\n'
        f'  hint {{ show on description "{name}" }}\n}}\n' for name, target in pcms.items()))
    server = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
         *(f"--load={m}" for m in modules), "--load=module-native-protocol-unix"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PulseAudio did not come up"
            time.sleep(0.05)
        if "sounddevice" in sys.modules:  # PortAudio lists devices once: list them again
            sys.modules["sounddevice"]._terminate()
            sys.modules["sounddevice"]._initialize()
        yield
    finally:
        server.terminate()
        server.wait(10)
