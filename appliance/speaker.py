"""The unit's loudspeaker through sounddevice (PortAudio: ALSA or PulseAudio)."""
from __future__ import annotations

import threading

from appliance.notice import NoticeUnavailable, Sound

CHUNK_S = 0.05


class SoundDeviceSpeaker:
    """Plays through the named output device (PortAudio's default if None), at `rate` (0: the
    device's own default rate), in short chunks so that a stop press can cut a notice short.
    A sound of another rate is resampled to it first (FFmpeg's resampler through PyAV), so the
    device plays what it is given rather than refusing the rate or playing it too fast.
    Returns only after the last sample has left the device."""

    def __init__(self, device: str | None = None, rate: int = 0):
        self._device = device
        self._rate = rate
        self._resampled: dict[tuple[Sound, int], Sound] = {}

    def play(self, sound: Sound, cancel: threading.Event) -> bool:
        from capture.audio import PORTAUDIO
        try:
            import sounddevice
            with PORTAUDIO:
                rate = self._rate or int(sounddevice.query_devices(self._device,
                                                                   "output")["default_samplerate"])
                pcm = self._at(sound, rate).pcm
                with sounddevice.RawOutputStream(samplerate=rate, channels=1, dtype="int16",
                                                 device=self._device) as stream:
                    step = int(rate * CHUNK_S) * 2
                    for i in range(0, len(pcm), step):
                        if cancel.is_set():
                            stream.abort()
                            return False
                        stream.write(pcm[i:i + step])
                    stream.stop()  # waits until every buffered sample has been played
            return True
        except Exception as e:
            raise NoticeUnavailable(f"speaker: {e}") from e

    def _at(self, sound: Sound, rate: int) -> Sound:
        """`sound` at `rate`, resampled once and kept (the notices are few and fixed)."""
        if sound.rate == rate:
            return sound
        if (sound, rate) not in self._resampled:
            self._resampled[sound, rate] = resample(sound, rate)
        return self._resampled[sound, rate]


def resample(sound: Sound, rate: int) -> Sound:
    """`sound` at `rate`, through FFmpeg's resampler (libswresample)."""
    import av
    import numpy as np
    frame = av.AudioFrame.from_ndarray(np.frombuffer(sound.pcm, "<i2").reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = sound.rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frames = resampler.resample(frame) + resampler.resample(None)
    pcm = b"".join(f.to_ndarray().astype("<i2").tobytes() for f in frames)
    return Sound(sound.label, pcm, rate, sound.text)
