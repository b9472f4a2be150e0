"""What the teacher hears from the pad (it has no screen). The unit's status light shows the
unit's state as ever (amber blinking: armed, waiting for the PIN; red: recording); the pad adds
short tones from its own sound output:

    one short high tone        teacher number taken: type the PIN (or: discard chosen)
    two rising tones           the unit accepted (recording starts, or the discard is done)
    one long low tone          refused: wrong PIN, locked, unknown number, no challenge, or the
                               unit's refusal

The sound output is checked once, when the service starts: a missing one is the journal line
then. A tone that cannot play later (the device is busy with the unit's notice, or has gone) is
skipped without one, since a line then would be timed by a teacher's key press (P9); it never
holds up the pad.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

RATE = 16000


class Feedback:
    """No sound: the base for the tones and for the simulator's record of what the pad said."""

    def prompt(self) -> None:
        """The number was taken; the pad waits for the PIN."""

    def outcome(self, result: dict) -> None:
        """The end of one try: the unit's result, or the pad's own refusal (`"pad": True`)."""


class ToneFeedback(Feedback):
    """Tones through the default sound output (sounddevice/PortAudio, ALSA on a Pi)."""

    def __init__(self) -> None:
        # Now, when the service starts: PortAudio's first use, and any line about it (P9).
        try:
            import sounddevice
            sounddevice.query_devices(kind="output")
        except Exception as e:  # noqa: BLE001 - without a sound output the pad only has no tones
            log.warning("pad feedback: no sound output for tones: %s", e)

    def prompt(self) -> None:
        self._play([(1320, 0.08)])

    def outcome(self, result: dict) -> None:
        self._play([(880, 0.1), (1320, 0.15)] if result.get("ok") else [(220, 0.5)])

    def _play(self, tones: list[tuple[float, float]]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.run_in_executor(None, self._play_blocking, tones)

    def _play_blocking(self, tones: list[tuple[float, float]]) -> None:
        try:
            import numpy as np
            import sounddevice

            parts = []
            for freq, seconds in tones:
                t = np.arange(int(RATE * seconds)) / RATE
                parts += [0.3 * np.sin(2 * np.pi * freq * t), np.zeros(RATE // 20)]
            # A blocking stream, not sounddevice.play: play's callback needs W+X memory, which
            # the unit forbids (MemoryDenyWriteExecute=yes).
            with sounddevice.OutputStream(samplerate=RATE, channels=1, dtype="float32") as out:
                out.write(np.concatenate(parts).astype(np.float32))
        except Exception:  # noqa: BLE001 - a tone that fails is only a missing tone (see above)
            pass
