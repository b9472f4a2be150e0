"""[audio] mode = "teacher": the unit hears only the teacher's own microphone; the room's is never
opened. Through a real audio stack: two PulseAudio null sinks, "room_air" and "teacher_air",
each with a different tone playing into it; each sink's monitor is a source, reached through an
ALSA PCM named as IT would name the two microphones in asound.conf. The recording holds the
teacher's tone, PulseAudio saw one recording stream, on the teacher's source, and the timeline
shows only the teacher's microphone opening. The simulated microphones follow the mode too."""
from __future__ import annotations

import io
import subprocess
import threading
import time

import av
import numpy as np
import pyrage
import pytest

from hwsim.capture import TEACHER_TONE_HZ, TONE_HZ
from hwsim.invariants import check_all
from tests.audio_pulse import pulse_server
from tests.media import identity, recording_dirs

RATE = 48000
ROOM_HZ, TEACHER_HZ = 440, 1000
MICROPHONES = {"room_mic": "room_air.monitor", "teacher_mic": "teacher_air.monitor"}


@pytest.fixture
def two_rooms(tmp_path, monkeypatch):
    """PulseAudio with two null sinks, a different tone playing into each; ALSA PCMs
    "room_mic" and "teacher_mic" reach their monitors."""
    modules = []
    for sink, hz in (("room_air", ROOM_HZ), ("teacher_air", TEACHER_HZ)):
        modules += [f"module-null-sink sink_name={sink} rate={RATE} channels=1",
                    f"module-sine sink={sink} frequency={hz}"]
    with pulse_server(tmp_path, monkeypatch, modules, MICROPHONES):
        yield


def _recorded_sound(rec, ident) -> np.ndarray:
    samples = []
    for path in sorted(rec.glob("seg-*.ts.age")):
        with av.open(io.BytesIO(pyrage.decrypt(path.read_bytes(), [ident]))) as container:
            for frame in container.decode(audio=0):
                samples.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(samples)


def _loudest_hz(x: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def _recording_sources() -> set[str]:
    """The PulseAudio sources that recording streams read from, now."""
    names = {line.split("\t")[0]: line.split("\t")[1] for line in subprocess.run(
        ["pactl", "list", "short", "sources"], check=True, capture_output=True, text=True,
        timeout=10).stdout.splitlines()}
    outputs = subprocess.run(["pactl", "list", "short", "source-outputs"], check=True,
                             capture_output=True, text=True, timeout=10).stdout.splitlines()
    return {names[line.split("\t")[1]] for line in outputs}


def test_teacher_mode_hears_only_the_teachers_microphone_through_pulseaudio(two_rooms, lab):
    lab.settings["sim"] = {"microphone": "sounddevice"}
    lab.settings["audio"] = {"mode": "teacher", "microphone": "room_mic",
                             "teacher_microphone": "teacher_mic"}
    lab.write_config()
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # what PulseAudio records from, all through the lesson
        while not done.is_set():
            seen.update(_recording_sources())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    with lab.daemon() as unit:
        watcher.start()
        try:
            assert unit.lesson("t-evans", seconds=2.0)["ok"]
        finally:
            done.set()
            watcher.join(10)
    assert seen == {"teacher_air.monitor"}  # the room's source was never read

    events = lab.timeline()
    assert check_all(events) == []
    opened = [(e["device"], e.get("source")) for e in events
              if e["ev"] == "device" and e["phase"] == "open"]
    assert opened == [("camera", None), ("teacher_microphone", "teacher_mic")]
    (rec,) = recording_dirs(lab)
    sound = _recorded_sound(rec, identity(lab))
    assert len(sound) > RATE  # more than a second of it
    assert abs(_loudest_hz(sound[RATE // 10:]) - TEACHER_HZ) < 5


@pytest.mark.parametrize("mode, device, hz", [("room", "microphone", TONE_HZ),
                                              ("teacher", "teacher_microphone", TEACHER_TONE_HZ)])
def test_the_simulated_microphones_follow_the_mode(lab, mode, device, hz):
    lab.settings["audio"] = {"mode": mode, "teacher_microphone": "headset"}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.0)["ok"]
    events = lab.timeline()
    assert check_all(events) == []
    opened = [e["device"] for e in events if e["ev"] == "device" and e["phase"] == "open"]
    assert opened == ["camera", device]
    (rec,) = recording_dirs(lab)
    sound = _recorded_sound(rec, identity(lab))
    assert abs(_loudest_hz(sound[RATE // 10:]) - hz) < 5
