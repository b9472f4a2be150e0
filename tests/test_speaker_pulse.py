"""The notice through a real audio stack: sounddevice -> PortAudio -> ALSA -> PulseAudio, into a
null sink whose monitor we record. Proves the notice reached the "room" in full before capture:
every spoken piece of it is in the record, in order, and its last sound had reached the record
before the first device opened."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest

from appliance.config import load
from appliance.notice import Sound, synthesise
from hwsim.invariants import check_all, device_intervals

CHUNK_S = 0.05       # the speaker writes the notice 50 ms at a time (appliance/speaker.py)
SPOKEN = 2000        # a piece of the notice this loud is speech the room must hear
MATCH = 0.95         # how alike a piece and the record must be where it was heard (same rate)
OPENING_S = 0.5      # the start of the notice, to find where it begins in the record
SLACK = 8            # samples a piece may seem to overlap the one before
MAX_PAUSE_S = 0.5    # how long a pause between two pieces may be (the sound card ran dry)
# When the player underruns, PulseAudio rewinds the sink; its monitor has already sent what it
# rendered before, so the record (not the room) can show a piece or two garbled around it.
MAX_GARBLED = 2


@pytest.fixture
def room(lab, monkeypatch) -> Sound:
    """The lab's unit speaks through sounddevice into a PulseAudio null sink, "room", that runs
    at the notice's own rate, mono: nothing on the way is resampled, so what the room heard can
    be compared with what was played sample for sample. Returns the start notice the unit will
    play (espeak-ng is deterministic)."""
    if shutil.which("pulseaudio") is None or shutil.which("parec") is None:
        pytest.skip("PulseAudio is not installed (./dev installs it)")
    lab.settings["sim"] = {"speaker": "sounddevice"}
    lab.settings["notice"] = {"languages": ["en"], "start_en": "This camera is now recording.",
                              "stop_en": "Stopped."}
    lab.write_config()
    config = load(lab.config_path).notice
    notice = synthesise("start", config.texts("start"), config.words_per_minute)
    runtime = tempfile.mkdtemp(prefix="pulse-")
    for k in ("PULSE_RUNTIME_PATH", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, runtime)
    server = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
         f"--load=module-null-sink sink_name=room rate={notice.rate} channels=1",
         "--load=module-native-protocol-unix"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PulseAudio did not come up"
            time.sleep(0.05)
        subprocess.run(["pactl", "set-default-sink", "room"], check=True)
        yield notice
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(runtime, ignore_errors=True)


class Recorder:
    """parec on the room's monitor: the samples heard, and when each batch of them arrived
    (monotonic, like the timeline), so a sample's arrival bounds when it was played."""

    def __init__(self, rate: int):
        self.rate = rate
        self.heard = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, samples heard by then)
        self._proc = subprocess.Popen(
            ["parec", "-d", "room.monitor", "--raw", "--format=s16le", f"--rate={rate}",
             "--channels=1", "--latency-msec=20"], stdout=subprocess.PIPE)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Until the monitor streams: sound played before that would not be in the record."""
        deadline = time.monotonic() + timeout
        while len(self.heard) < self.rate:  # half a second of 16-bit samples
            assert time.monotonic() < deadline, "parec records nothing from the room"
            assert self._proc.poll() is None, "parec exited"
            time.sleep(0.02)

    def stop(self) -> np.ndarray:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)
        return np.frombuffer(bytes(self.heard[:len(self.heard) // 2 * 2]), "<i2").astype(float)

    def arrived(self, sample: int) -> float:
        """When the batch holding `sample` reached us: it had been played by then."""
        return next(t for t, n in self.arrivals if n > sample)

    def _read(self) -> None:
        while chunk := self._proc.stdout.read1(65536):
            self.heard.extend(chunk)
            self.arrivals.append((time.monotonic(), len(self.heard) // 2))


def _find(heard: np.ndarray, piece: np.ndarray, start: int, stop: int) -> tuple[int, float]:
    """Where in heard[start:stop] `piece` matches best (the earliest of equal matches), and how
    well: normalised cross-correlation, 1.0 for the same samples."""
    start = max(start, 0)
    window = heard[start:stop]
    if len(window) < len(piece):
        return start, 0.0
    n = 1 << (len(window) + len(piece)).bit_length()
    dots = np.fft.irfft(np.fft.rfft(window, n) * np.conj(np.fft.rfft(piece, n)), n)
    dots = dots[:len(window) - len(piece) + 1]
    energy = np.concatenate(([0.0], np.cumsum(window ** 2)))
    local = np.maximum(energy[len(piece):] - energy[:-len(piece)], 0.0)
    own = float(np.sum(piece ** 2))
    # Near-silence matches nothing (and would divide by almost zero).
    score = np.where(local > own / 100, dots / np.sqrt(np.maximum(local, own / 100) * own), 0.0)
    best = int(np.flatnonzero(score >= score.max() - 1e-6)[0])
    return start + best, float(score[best])


def _heard_in_order(heard: np.ndarray, notice: Sound) -> tuple[dict[int, int], list[int],
                                                                 list[np.ndarray]]:
    """Look for each spoken 50 ms piece of `notice` in the record, each after the one before
    with at most a short pause between. Returns where each was heard, the spoken pieces that
    were not, and the pieces."""
    pcm = np.frombuffer(notice.pcm, "<i2").astype(float)
    step = int(notice.rate * CHUNK_S)
    pieces = [pcm[i:i + step] for i in range(0, len(pcm), step)]
    at, score = _find(heard, pcm[:int(notice.rate * OPENING_S)], 0, len(heard))
    assert score > MATCH, f"the start of the notice was not heard ({score:.3f})"
    heard_at: dict[int, int] = {}
    missing: list[int] = []
    after, last = at, -1
    for i, piece in enumerate(pieces):
        if np.max(np.abs(piece)) <= SPOKEN:
            continue
        since = i - last  # pieces since the last one heard, this one included
        found, score = _find(heard, piece, after - SLACK,
                             after + since * step + int(MAX_PAUSE_S * notice.rate))
        if score < MATCH:
            missing.append(i)
            continue
        heard_at[i], after, last = found, found + step, i
    return heard_at, missing, pieces


def test_notice_is_played_through_pulseaudio_in_full_before_capture(room, lab):
    notice = room
    recorder = Recorder(notice.rate)
    try:
        recorder.wait_listening()
        with lab.daemon() as unit:
            assert unit.lesson("t-evans", seconds=0.2)["ok"]
    finally:
        heard = recorder.stop()
    events = lab.timeline()
    assert check_all(events) == []
    # The timeline: the notice played for as long as it lasts, to the end, then capture opened.
    start, end = [e for e in events if e["ev"] == "notice" and e["label"] == "start"]
    assert start["seconds"] == notice.seconds and end["completed"] is True
    assert end["t"] - start["t"] >= notice.seconds * 0.95
    first_open = device_intervals(events)[0][1]
    assert end["t"] < first_open
    # The room: every spoken piece of the notice, in order, to its last one.
    heard_at, missing, pieces = _heard_in_order(heard, notice)
    spoken = sorted([*heard_at, *missing])
    assert len(spoken) > 20 and len(missing) <= MAX_GARBLED and spoken[-1] in heard_at, (
        f"of {len(spoken)} spoken pieces of the notice these were not heard: {missing}")
    # The last sound of it had reached the record before the camera or microphone opened.
    last = spoken[-1]
    end_of_sound = heard_at[last] + int(np.flatnonzero(pieces[last])[-1])
    assert recorder.arrived(end_of_sound) < first_open
