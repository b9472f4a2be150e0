"""The unit's loudspeaker through sounddevice (PortAudio: ALSA or PulseAudio)."""
from __future__ import annotations

import threading

from appliance.notice import NoticeUnavailable, Sound

CHUNK_S = 0.05


class SoundDeviceSpeaker:
    """Plays through the default (or named) output device, in short chunks so that a stop press
    can cut a notice short. Returns only after the last sample has left the device."""

    def __init__(self, device: str | None = None):
        self._device = device

    def play(self, sound: Sound, cancel: threading.Event) -> bool:
        try:
            import sounddevice
            with sounddevice.RawOutputStream(samplerate=sound.rate, channels=1, dtype="int16",
                                             device=self._device) as stream:
                step = int(sound.rate * CHUNK_S) * 2
                for i in range(0, len(sound.pcm), step):
                    if cancel.is_set():
                        stream.abort()
                        return False
                    stream.write(sound.pcm[i:i + step])
                stream.stop()  # waits until every buffered sample has been played
            return True
        except Exception as e:
            raise NoticeUnavailable(f"speaker: {e}") from e
