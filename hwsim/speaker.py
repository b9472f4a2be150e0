"""A simulated loudspeaker that keeps everything it played."""
from __future__ import annotations

import threading
import time

from appliance.notice import NoticeUnavailable, Sound
from hwsim.faults import Faults
from hwsim.timeline import Timeline

CHUNK_S = 0.05


class MemorySpeaker:
    """Plays a sound by keeping it, taking as long as the sound lasts divided by `speed`.
    `played` holds (label, pcm) of every sound played to the end."""

    def __init__(self, timeline: Timeline, faults: Faults, speed: float = 1.0, inner=None):
        self._timeline = timeline
        self._faults = faults
        self._speed = speed
        self._inner = inner  # a real speaker to play through as well (PulseAudio null sink)
        self.played: list[tuple[str, bytes]] = []

    def play(self, sound: Sound, cancel: threading.Event) -> bool:
        if "speaker" in self._faults:
            self._timeline("notice", phase="failed", label=sound.label)
            raise NoticeUnavailable("speaker: simulated amplifier failure")
        self._timeline("notice", phase="start", label=sound.label, seconds=sound.seconds,
                       text=sound.text)
        if self._inner is not None:
            completed = self._inner.play(sound, cancel)
        else:
            completed = self._pace(sound.seconds / self._speed, cancel)
        if completed:
            self.played.append((sound.label, sound.pcm))
        self._timeline("notice", phase="end", label=sound.label, completed=completed)
        return completed

    def _pace(self, seconds: float, cancel: threading.Event) -> bool:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if cancel.wait(min(left, CHUNK_S)):
                return False
            if "speaker" in self._faults:
                raise NoticeUnavailable("speaker: simulated amplifier failure")
        return not cancel.is_set()
