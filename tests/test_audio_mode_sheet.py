"""The notice sheets say what `[audio] mode` records: the door notice and the fact sheet say
"video only" for mode "none", in English and Welsh, and the fact sheet says only the teacher's
own microphone is heard for mode "teacher"."""
from __future__ import annotations

import tomllib

import pytest
import tomli_w

from appliance.cli import main
from tests.test_notice_sheet_render import _config, _text


@pytest.mark.parametrize("audio, room_says, facts_say, neither_says", [
    ({"mode": "none"}, ["record video only (no sound)", "recordio fideo yn unig (heb sain)"],
     ["Video only, from the unit's camera: no sound is recorded", "Fideo yn unig"],
     ["video and audio", "fideo a sain", "Video and audio"]),
    ({"mode": "teacher", "teacher_microphone": "headset"},
     ["record video and audio", "recordio fideo a sain"],
     ["audio from the teacher's own microphone only (the room's is never opened)",
      "sain o feicroffon yr athro ei hun yn unig"],
     ["video only", "microphone of the unit"]),
])
def test_the_sheets_say_what_the_audio_mode_records(tmp_path, lab_template, capsys, audio,
                                                    room_says, facts_say, neither_says):
    path = _config(tmp_path, lab_template.roster_dir)
    with open(path, "rb") as f:
        settings = tomllib.load(f)
    with open(path, "wb") as f:
        tomli_w.dump({**settings, "audio": audio}, f)
    assert main(["notice-sheet", "--config", path, "-o", str(tmp_path / "out")]) == 0
    room = _text(tmp_path / "out" / "room-notice.pdf")
    sheet = _text(tmp_path / "out" / "fact-sheet.pdf")
    for words in room_says:
        assert words in room, words
    for words in facts_say:
        assert words in sheet, words
    for words in neither_says:
        assert words not in room + sheet, words
