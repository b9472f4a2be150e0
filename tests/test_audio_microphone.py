"""The microphone (capture/audio.py): every sample in order, a stall of the capture chain far
longer than PortAudio's default latency loses nothing, an overflow is counted and ends a
recording only if it persists, and it opens under the unit's MemoryDenyWriteExecute=yes."""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from capture import audio
from capture.audio import MAX_OVERFLOWS, SoundDeviceMicrophone
from capture.devices import CaptureError
from tests.audio_pulse import pulse_server

RATE = 48000
TONE_HZ = 441  # not a divisor of the rate: a lost block shifts the phase, which shows


class FakeInputStream:
    """sounddevice's blocking InputStream, fed by the test: `hear()` queues a block, with
    PortAudio's overflow flag if asked; a read waits for one until the test ends."""

    instances: list[FakeInputStream] = []
    ended = threading.Event()

    def __init__(self, samplerate, channels, dtype, device=None, blocksize=0, latency=None,
                 **kwargs):
        assert "callback" not in kwargs, "a callback stream cannot open under W^X"
        self.blocksize, self.latency = blocksize, latency
        self.heard: queue.Queue[tuple[np.ndarray, bool]] = queue.Queue()
        FakeInputStream.instances.append(self)

    def start(self) -> None:
        pass

    def read(self, frames):
        while not FakeInputStream.ended.is_set():
            try:
                values, overflowed = self.heard.get(timeout=0.02)
            except queue.Empty:
                continue
            assert len(values) == frames
            return values.reshape(-1, 1).astype(np.float32), overflowed
        return np.zeros((frames, 1), np.float32), False

    def hear(self, values: np.ndarray, overflow: bool = False) -> None:
        self.heard.put((values, overflow))

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def fake_sounddevice(monkeypatch):
    FakeInputStream.instances = []
    FakeInputStream.ended = threading.Event()
    monkeypatch.setitem(sys.modules, "sounddevice",
                        types.SimpleNamespace(InputStream=FakeInputStream))
    yield FakeInputStream
    FakeInputStream.ended.set()


def test_a_silent_microphone_read_gives_up_at_its_timeout(fake_sounddevice):
    microphone = SoundDeviceMicrophone(rate=RATE)
    microphone.open()
    started = time.monotonic()
    with pytest.raises(CaptureError, match="no sound within 0.2 s"):
        microphone.read(960, timeout=0.2)
    assert time.monotonic() - started < 1.0
    fake_sounddevice.ended.set()
    microphone.close()


def test_microphone_reads_return_every_sample_in_order_with_an_explicit_latency(
        fake_sounddevice):
    microphone = SoundDeviceMicrophone(rate=RATE)
    microphone.open()
    (stream,) = fake_sounddevice.instances
    assert stream.latency == audio.LATENCY_S
    heard = np.arange(5 * stream.blocksize, dtype=np.float32)
    for block in np.split(heard, 5):
        stream.hear(block)
    got = [microphone.read(n, timeout=1.0) for n in (700, 1920, 1)]
    got.append(microphone.read(len(heard) - 2621, timeout=1.0))
    assert np.array_equal(np.concatenate(got), heard)
    assert microphone.overflows == 0
    fake_sounddevice.ended.set()
    microphone.close()


def test_an_overflow_is_counted_and_ends_the_recording_only_when_it_persists(fake_sounddevice):
    microphone = SoundDeviceMicrophone(rate=RATE)
    microphone.open()
    (stream,) = fake_sounddevice.instances
    block = np.ones(stream.blocksize, np.float32)
    for n in range(1, MAX_OVERFLOWS):
        stream.hear(block, overflow=True)
        assert np.array_equal(microphone.read(len(block), timeout=1.0), block)
        assert microphone.overflows == n
    stream.hear(block, overflow=True)  # the MAX_OVERFLOWS-th within the window
    with pytest.raises(CaptureError, match=f"overflowed {MAX_OVERFLOWS} times"):
        microphone.read(len(block), timeout=1.0)
    assert microphone.overflows == MAX_OVERFLOWS
    fake_sounddevice.ended.set()
    microphone.close()


def test_samples_lost_from_a_full_queue_become_zeros_in_their_place_and_count_once(
        fake_sounddevice, monkeypatch):
    monkeypatch.setattr(audio, "BUFFER_S", 3 * audio.BLOCK_S)  # three blocks
    microphone = SoundDeviceMicrophone(rate=RATE)
    microphone.open()
    (stream,) = fake_sounddevice.instances
    size = stream.blocksize
    blocks = [np.full(size, i + 1, np.float32) for i in range(6)]
    for block in blocks[:5]:  # the reader is stalled: blocks 4 and 5 find the queue full
        stream.hear(block)
    while not stream.heard.empty():
        time.sleep(0.01)
    first = microphone.read(3 * size, timeout=1.0)
    stream.hear(blocks[5])
    rest = microphone.read(3 * size, timeout=1.0)
    assert np.array_equal(first, np.concatenate(blocks[:3]))
    assert np.array_equal(rest, np.concatenate((np.zeros(2 * size), blocks[5])))
    assert microphone.overflows == 1
    fake_sounddevice.ended.set()
    microphone.close()


# -- through a real audio stack: PulseAudio's sine source behind ALSA and PortAudio ------------


@pytest.fixture
def tone_source(tmp_path, monkeypatch):
    """A PulseAudio server with a sine source "tone" (441 Hz), reached through an ALSA PCM
    named "classroom_mic" (as IT would name a USB microphone in asound.conf)."""
    with pulse_server(tmp_path, monkeypatch,
                      [f"module-sine-source source_name=tone rate={RATE} frequency={TONE_HZ}"],
                      {"classroom_mic": "tone"}):
        yield "classroom_mic"


def _breaks(x: np.ndarray) -> np.ndarray:
    """Where the samples stop following one sine (a sample lost, or one put in)."""
    w = 2 * np.pi * TONE_HZ / RATE
    residual = x[2:] - 2 * np.cos(w) * x[1:-1] + x[:-2]
    return np.flatnonzero(np.abs(residual) > 1e-3)


def test_a_half_second_stall_of_the_reader_loses_no_sample_and_stops_nothing(tone_source):
    microphone = SoundDeviceMicrophone(RATE, tone_source)
    microphone.open()
    try:
        read = [microphone.read(RATE // 25, timeout=2.0) for _ in range(10)]
        time.sleep(0.5)  # the capture chain is busy: 14 times PortAudio's default latency
        read += [microphone.read(RATE // 25, timeout=2.0) for _ in range(40)]
    finally:
        microphone.close()
    x = np.concatenate(read).astype(np.float64)
    assert len(x) == 50 * RATE // 25 and np.abs(x).max() > 0.4  # the tone, not silence
    assert list(_breaks(x)) == []
    assert microphone.overflows == 0


MDWE_OPEN = """
import ctypes, sys
import numpy as np
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: what systemd's MemoryDenyWriteExecute=yes sets.
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
from capture.audio import SoundDeviceMicrophone
microphone = SoundDeviceMicrophone(48000, sys.argv[1])
microphone.open()
try:
    samples = microphone.read(4800, timeout=2.0)
finally:
    microphone.close()
print(float(np.abs(samples).max()))
"""


def test_the_microphone_opens_and_hears_under_memory_deny_write_execute(tone_source):
    done = subprocess.run([sys.executable, "-c", MDWE_OPEN, tone_source], capture_output=True,
                          text=True, timeout=60)
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0.4
