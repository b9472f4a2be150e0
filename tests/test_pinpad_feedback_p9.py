"""P9 for the pad's tones (pinpad/feedback.py): whether the pad can sound is said in the journal
when its service starts, never when a tone fails later, since a tone is played when a teacher
presses a key and a line then would say when someone started a recording."""
from __future__ import annotations

import logging

import sounddevice

from pinpad.feedback import ToneFeedback


def _broken(*args, **kwargs):
    raise sounddevice.PortAudioError("Device unavailable")


def test_a_missing_sound_output_is_said_at_start_up_only(monkeypatch, caplog):
    monkeypatch.setattr(sounddevice, "query_devices", _broken)
    monkeypatch.setattr(sounddevice, "OutputStream", _broken)
    with caplog.at_level(logging.DEBUG, logger="pinpad"):
        feedback = ToneFeedback()
        assert [r.getMessage() for r in caplog.records] == [
            "pad feedback: no sound output for tones: Device unavailable"]
        caplog.clear()
        for tones in ([(1320, 0.08)], [(220, 0.5)]):  # a prompt, a refusal: as a teacher types
            feedback._play_blocking(tones)
    assert caplog.records == []


def test_a_tone_that_fails_later_writes_no_line(monkeypatch, caplog):
    monkeypatch.setattr(sounddevice, "query_devices", lambda *a, **k: {"name": "speaker"})
    monkeypatch.setattr(sounddevice, "OutputStream", _broken)  # busy with the unit's notice
    with caplog.at_level(logging.DEBUG, logger="pinpad"):
        ToneFeedback()._play_blocking([(880, 0.1), (1320, 0.15)])
    assert caplog.records == []
