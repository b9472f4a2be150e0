"""The spoken notice (P3): synthesised offline with espeak-ng, played completely before capture.

    notices = Notices.synthesise(config.notice, video_only)   # at start-up; NoticeUnavailable
    completed = speaker.play(notices.start, cancel)  # True only if every sample was played
"""
from __future__ import annotations

import io
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from typing import Literal, Protocol

from appliance.config import NoticeConfig

VOICES = {"en": "en-gb", "cy": "cy"}
PAUSE_S = 0.5  # between languages


class NoticeUnavailable(Exception):
    """The notice cannot be made or played; capture must not start."""


@dataclass(frozen=True)
class Sound:
    """Mono 16-bit PCM with a label saying which notice it is."""

    label: str
    pcm: bytes
    rate: int
    text: str = ""  # what it says (for the simulator's record)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


class Speaker(Protocol):
    """Plays a sound to the room."""

    def play(self, sound: Sound, cancel: threading.Event) -> bool:
        """Play `sound` to the end and return True, or return False if `cancel` was set first.
        Raises `NoticeUnavailable` if it cannot play."""
        ...


@dataclass(frozen=True)
class Notices:
    """The notices, synthesised once."""

    start: Sound
    stop: Sound
    discard: Sound
    full: Sound  # why a recording cannot start: the spool is full
    paused: Sound | None = None  # the recording is paused: camera and microphone are off

    @classmethod
    def synthesise(cls, config: NoticeConfig, video_only: bool = False) -> Notices:
        """The notices; the start notice says "video only" if `video_only` (no microphone:
        `[audio] mode = "none"`), else "video and audio"."""
        start = config.texts("start_video_only" if video_only else "start")
        return cls(synthesise("start", start, config.words_per_minute),
                   *(synthesise(kind, config.texts(kind), config.words_per_minute)
                     for kind in ("stop", "discard", "full", "paused")))


def synthesise(label: Literal["start", "stop", "discard", "full", "paused"], texts: list[tuple[str, str]],
               words_per_minute: int = 150) -> Sound:
    """Speak each (language, text) with espeak-ng, joined by a short pause."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise NoticeUnavailable("espeak-ng is not installed")
    parts: list[bytes] = []
    rate = None
    for lang, text in texts:
        try:
            out = subprocess.run(
                [espeak, "-v", VOICES[lang], "-s", str(words_per_minute), "--stdout", "--", text],
                capture_output=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise NoticeUnavailable(f"espeak-ng failed for {lang}: {e}") from e
        with wave.open(io.BytesIO(out)) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise NoticeUnavailable("espeak-ng gave an unexpected sample format")
            if rate not in (None, w.getframerate()):
                raise NoticeUnavailable("espeak-ng voices differ in sample rate")
            rate = w.getframerate()
            if parts:
                parts.append(b"\0\0" * int(rate * PAUSE_S))
            parts.append(w.readframes(w.getnframes()))
    if rate is None:
        raise NoticeUnavailable("no notice language configured")
    return Sound(label, b"".join(parts), rate, " ".join(text for _, text in texts))
