"""[audio]: the unit speaks its notice through the speaker IT named, at that speaker's rate, and
will not arm when that speaker is missing or is HDMI (the notice must reach the room, P3): a
fault on the status light, its reason in the journal. Through a real audio stack: sounddevice ->
PortAudio -> ALSA (PCMs named in ~/.asoundrc, as IT names them in asound.conf) -> PulseAudio."""
from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest

from appliance.config import load
from appliance.notice import synthesise
from appliance.speaker import resample
from hwsim.invariants import check_all
from tests.audio_pulse import pulse_server
from tests.test_speaker_pulse import Recorder, _find

SINK_RATE = 44100
SPEAKERS = {"classroom_speaker": "room", "hdmi_screen": "room"}  # ALSA PCM -> PulseAudio sink


@pytest.fixture
def room_lab(lab, tmp_path, monkeypatch):
    """The lab's unit playing through sounddevice; PulseAudio with a null sink "room" at
    44.1 kHz, mono, behind the ALSA PCMs of SPEAKERS. Call it with the [audio] settings."""
    with pulse_server(tmp_path, monkeypatch,
                      [f"module-null-sink sink_name=room rate={SINK_RATE} channels=1"],
                      SPEAKERS):
        subprocess.run(["pactl", "set-default-sink", "room"], check=True)

        def configure(**audio):
            lab.settings["sim"] = {"speaker": "sounddevice"}
            lab.settings["notice"] = {"languages": ["en"],
                                      "start_en": "This camera is now recording.",
                                      "stop_en": "Stopped."}
            lab.settings["audio"] = audio
            lab.write_config()
            return lab
        yield configure


def _status_blinks_magenta(events: list[dict], since: float) -> bool:
    """Whether the status LED blinked magenta (red and blue together, green dark) at the fault
    pattern's 0.25 s, at least twice, after `since`."""
    pins = {name: [(e["t"], e["value"]) for e in events
                   if e["ev"] == "pin" and e["name"] == name and e["t"] >= since]
            for name in ("status_red", "status_green", "status_blue")}
    red_on = [t for t, v in pins["status_red"] if v == 1.0]
    blue_on = [t for t, v in pins["status_blue"] if v == 1.0]
    if len(red_on) < 2 or len(blue_on) < 2 or any(v for _, v in pins["status_green"][1:]):
        return False
    periods = np.diff(red_on)
    return bool(np.all(np.abs(periods - 0.5) < 0.15)
                and all(abs(r - b) < 0.05 for r, b in zip(red_on, blue_on, strict=False)))


def _refused_to_arm(lab, unit, presses: int = 2) -> list[dict]:
    """Press `presses` times; each must leave the unit idle with no challenge issued."""
    for _ in range(presses):
        before = len(lab.timeline())
        unit.control("press")
        deadline = time.monotonic() + 10
        while not [e for e in lab.timeline()[before:] if e["ev"] == "refused"]:
            assert time.monotonic() < deadline, "the press was neither refused nor acted on"
            time.sleep(0.02)
        assert unit.state() == "idle"
    events = lab.timeline()
    assert [e for e in events if e["ev"] in ("challenge", "notice", "device")] == []
    return events


@pytest.mark.parametrize("speaker, reason", [
    ("no_such_speaker", "speaker 'no_such_speaker': No output device matching "
                        "'no_such_speaker'"),
    ("hdmi_screen", "speaker 'hdmi_screen' is HDMI; name the room's device in [audio], or set "
                    "allow_hdmi = true"),
    ("default", "speaker 'default' is ALSA's default, HDMI on a headless Pi; name the room's "
                "device in [audio], or set allow_hdmi = true"),
])
def test_a_missing_or_hdmi_speaker_is_a_fault_and_the_unit_will_not_arm(room_lab, speaker,
                                                                          reason):
    lab = room_lab(speaker=speaker)
    with lab.daemon() as unit:
        unit.wait_journal(f"fault: audio: {reason}")
        events = _refused_to_arm(lab, unit)
        assert [e["why"] for e in events if e["ev"] == "refused"] == ["audio"] * 3  # start-up too
        (fault,) = [e for e in events if e["ev"] == "fault"]
        assert fault["component"] == "audio" and fault["reason"] == reason
        deadline = time.monotonic() + 5
        while not _status_blinks_magenta(lab.timeline(), fault["t"]):
            assert time.monotonic() < deadline, "the status LED does not show the fault"
            time.sleep(0.05)
        time.sleep(1.2)  # two health ticks: a held line would be written by now
        # One line while the fault lasts, not one per press.
        assert lab.journal().count(f"fault: audio: {reason}") == 1


def test_allow_hdmi_lets_an_hdmi_speaker_play_the_notice(room_lab):
    lab = room_lab(speaker="hdmi_screen", allow_hdmi=True)
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=0.1)["ok"]
    assert "fault: audio" not in lab.journal()
    assert check_all(lab.timeline()) == []


def test_a_speaker_unplugged_after_start_up_is_found_at_the_next_arm(room_lab, tmp_path):
    lab = room_lab(speaker="classroom_speaker")
    with lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("press")
        unit.wait_state("idle")
        # IT's asound.conf loses the speaker (as a USB speaker unplugged would).
        asoundrc = tmp_path / ".asoundrc"
        asoundrc.write_text(asoundrc.read_text().replace("classroom_speaker", "elsewhere"))
        before = len(lab.timeline())
        unit.control("press")
        unit.wait_journal("fault: audio: speaker 'classroom_speaker': No output device")
        assert unit.state() == "idle"
        assert [e["ev"] for e in lab.timeline()[before:] if e["ev"] in ("refused", "challenge")
                ] == ["refused"]


class SinkInputs:
    """The sample format of every stream PulseAudio is given while it runs (pactl, polled)."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            out = subprocess.run(["pactl", "list", "sink-inputs", "short"], capture_output=True,
                                 text=True).stdout
            self.seen.update(" ".join(line.split("\t")[4:]) for line in out.splitlines())


@pytest.mark.parametrize("speaker_rate", [0, SINK_RATE])  # the device's own rate, or IT's
def test_the_notice_reaches_the_named_speaker_resampled_to_its_rate(room_lab, speaker_rate):
    lab = room_lab(speaker="classroom_speaker", speaker_rate=speaker_rate)
    config = load(lab.config_path).notice
    notice = synthesise("start", config.texts("start"), config.words_per_minute)
    assert notice.rate != SINK_RATE  # espeak-ng speaks at 22.05 kHz
    recorder = Recorder(SINK_RATE)
    streams = SinkInputs()
    try:
        recorder.wait_listening()
        with lab.daemon() as unit:
            assert unit.lesson("t-evans", seconds=0.1)["ok"]
    finally:
        heard = recorder.stop()
        seen = streams.stop()
    # PulseAudio was handed the notice at the speaker's rate: the unit resampled it.
    assert seen == {f"s16le 1ch {SINK_RATE}Hz"}
    # And the room heard it: the whole notice, at that rate, in the sink's record.
    expected = np.frombuffer(resample(notice, SINK_RATE).pcm, "<i2").astype(float)
    _, score = _find(heard, expected, 0, len(heard))
    assert score > 0.95, f"the resampled notice is not in the room's record ({score:.3f})"
    assert check_all(lab.timeline()) == []
