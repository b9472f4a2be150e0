"""The notice through a real audio stack: sounddevice -> PortAudio -> ALSA -> PulseAudio, into a
null sink whose monitor we record. Shows, from the timeline, that the start notice played for its
whole length before any device opened, and, from the record, that the room heard at least half its
length as voiced sound (a whole-run measure: it does not prove every sample arrived before capture)."""
from __future__ import annotations

import array
import shutil
import subprocess
import tempfile
import time

import pytest

from hwsim.invariants import check_all, device_intervals

RATE = 16000


@pytest.fixture
def pulse(monkeypatch):
    if shutil.which("pulseaudio") is None or shutil.which("parec") is None:
        pytest.skip("PulseAudio is not installed (./dev installs it)")
    runtime = tempfile.mkdtemp(prefix="pulse-")
    env = {"PULSE_RUNTIME_PATH": runtime, "XDG_RUNTIME_DIR": runtime}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    server = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
         "--load=module-null-sink sink_name=room", "--load=module-native-protocol-unix"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    subprocess.run(["pactl", "set-default-sink", "room"], check=True)
    yield
    server.terminate()
    server.wait(10)
    shutil.rmtree(runtime, ignore_errors=True)


def _voiced_seconds(raw: bytes, window: int = RATE // 50) -> float:
    samples = array.array("h", raw[: len(raw) // 2 * 2])
    loud = 0
    for i in range(0, len(samples) - window, window):
        chunk = samples[i:i + window]
        if max(abs(s) for s in chunk) > 500:
            loud += 1
    return loud * window / RATE


def test_notice_plays_its_length_before_capture_and_the_room_hears_half_of_it_voiced(pulse, lab):
    lab.settings["sim"] = {"speaker": "sounddevice"}
    lab.settings["notice"] = {"languages": ["en"], "start_en": "This camera is now recording.",
                              "stop_en": "Stopped."}
    lab.write_config()
    recorder = subprocess.Popen(
        ["parec", "-d", "room.monitor", "--raw", "--format=s16le", f"--rate={RATE}",
         "--channels=1", "--latency-msec=20"], stdout=subprocess.PIPE)
    try:
        with lab.daemon() as unit:
            assert unit.lesson("t-evans", seconds=0.2)["ok"]
    finally:
        time.sleep(0.3)
        recorder.terminate()
        heard = recorder.communicate(timeout=10)[0]
    events = lab.timeline()
    assert check_all(events) == []
    start = [e for e in events if e["ev"] == "notice" and e["label"] == "start"]
    seconds = start[0]["seconds"]
    assert start[1]["completed"] and start[1]["t"] - start[0]["t"] >= seconds * 0.95
    assert device_intervals(events)[0][1] > start[1]["t"]
    # The room heard about as much speech as the two notices hold (pauses between words excluded).
    voiced = _voiced_seconds(heard)
    assert voiced > seconds * 0.5, (voiced, seconds)
