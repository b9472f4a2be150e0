"""`classcam notice-sheet`: the door notice and the data-protection fact sheet say the
configuration's facts, in English and in Welsh (the PDF's own text, read back with pypdf), and
render as PNG."""
from __future__ import annotations

import re

import pytest
import tomli_w
from PIL import Image, ImageStat
from pypdf import PdfReader

from appliance.cli import main

HOST = "recordings.ysgol-example.cymru"
CONTACT = "dpo@ysgol-example.cymru"
PLACE = "Ystafell 5, Tŷ Gŵyr"  # ŵ and ŷ: the font must have them, the PDF must keep them


def _config(tmp_path, roster_dir, **privacy) -> str:
    for name in ("device.crt", "device.key"):
        (tmp_path / name).write_text("-")
    path = tmp_path / "classcam.toml"
    path.write_text(tomli_w.dumps({
        "device": {"id": "unit-ysgol-5", "roster_dir": str(roster_dir)},
        "recording": {"max_minutes": 55},
        "spool": {"quota_mb": 2048},
        "upload": {"url": f"https://{HOST}/api", "client_cert": str(tmp_path / "device.crt"),
                   "client_key": str(tmp_path / "device.key")},
        "privacy": {"contact": CONTACT, "place": PLACE,
                    "zones": [{"rect": [0.0, 0.5, 0.2, 1.0]}], **privacy}}))
    return str(path)


def _text(path) -> str:
    """The PDF's text, with its line breaks and runs of spaces made single spaces."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split())


ENGLISH = ["video and audio", "Only a teacher enrolled on this", f"account at {HOST}",
           "Only that teacher can watch it", "keeps at most 2048 MB",
           f"To ask for a recording to be deleted: {CONTACT}"]
WELSH = ["recordio fideo a sain", "Dim ond athro sydd wedi'i gofrestru ar y camera",
         f"gyfrif defnyddiwr yr athro yn {HOST}", "Dim ond yr athro hwnnw all ei wylio",
         "cadw 2048 MB", f"I ofyn am ddileu recordiad: {CONTACT}"]
ENGLISH_FACTS = ["at most 55 minutes", "1 privacy zone(s) are blanked out",
                 f"teacher's own account at {HOST}", "Only the teacher who recorded it",
                 "at most 2048 MB", CONTACT, "unit unit-ysgol-5"]
WELSH_FACTS = ["55 munud ar y mwyaf", "Mae 1 parth preifatrwydd",
               f"gyfrif defnyddiwr yr athro yn {HOST}", "Dim ond yr athro a'i recordiodd",
               "2048 MB o recordiadau", CONTACT, "uned unit-ysgol-5"]


def test_both_sheets_state_the_configs_facts_in_english_and_welsh(tmp_path, lab_template,
                                                                  capsys):
    config = _config(tmp_path, lab_template.roster_dir)
    assert main(["notice-sheet", "--config", config, "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "out" / "room-notice.pdf"),
                                               str(tmp_path / "out" / "fact-sheet.pdf")]
    room = _text(tmp_path / "out" / "room-notice.pdf")
    assert len(PdfReader(tmp_path / "out" / "room-notice.pdf").pages) == 1  # one door
    for fact in ENGLISH + WELSH + [PLACE, "blanked out", "cael eu cuddio"]:
        assert fact in room, fact
    assert room.index("Classroom camera") < room.index("Camera'r ystafell ddosbarth")
    sheet = _text(tmp_path / "out" / "fact-sheet.pdf")
    for fact in ENGLISH_FACTS + WELSH_FACTS + [PLACE]:
        assert fact in sheet, fact
    # Teachers are not named unless the configuration says so.
    assert "T Evans" not in room + sheet and "Teachers enrolled" not in room + sheet


def test_teachers_are_named_only_when_the_config_says_so(tmp_path, lab_template):
    config = _config(tmp_path, lab_template.roster_dir, name_teachers=True)
    assert main(["notice-sheet", "--config", config, "-o", str(tmp_path)]) == 0
    for name in ("room-notice.pdf", "fact-sheet.pdf"):
        text = _text(tmp_path / name)
        assert "Teachers enrolled: T Evans, T Jones." in text
        assert "Athrawon sydd wedi'u cofrestru: T Evans, T Jones." in text


@pytest.mark.parametrize("lang, present, absent", [("en", ENGLISH, WELSH),
                                                   ("cy", WELSH, ENGLISH)])
def test_one_language_only(tmp_path, lab_template, lang, present, absent):
    config = _config(tmp_path, lab_template.roster_dir)
    assert main(["notice-sheet", "--config", config, "--lang", lang, "-o", str(tmp_path)]) == 0
    room = _text(tmp_path / "room-notice.pdf")
    assert all(fact in room for fact in present)
    assert not any(fact in room for fact in absent)


def test_without_an_upload_server_or_contact_the_sheets_say_so(tmp_path, lab_template):
    path = tmp_path / "classcam.toml"
    path.write_text(tomli_w.dumps({"device": {"id": "unit-1",
                                              "roster_dir": str(lab_template.roster_dir)}}))
    assert main(["notice-sheet", "--config", str(path), "-o", str(tmp_path)]) == 0
    room = _text(tmp_path / "room-notice.pdf")
    assert "not sent anywhere yet" in room and "nid ydynt yn cael eu hanfon" in room
    assert "ask the teacher who made the recording" in room
    assert "gofynnwch i'r athro a wnaeth y recordiad" in room
    assert "unit-1" in room  # the place defaults to the device id
    assert "blanked out" not in room


def test_png_renders_both_sheets(tmp_path, lab_template):
    config = _config(tmp_path, lab_template.roster_dir)
    assert main(["notice-sheet", "--config", config, "--format", "png", "-o",
                 str(tmp_path)]) == 0
    for name in ("room-notice.png", "fact-sheet.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width >= 1000 and image.height >= 1400
            gray = image.convert("L")
            # Not blank: dark text on white, a few percent of the page.
            dark = sum(gray.histogram()[:128]) / (image.width * image.height)
            assert 0.01 < dark < 0.3, dark
            assert ImageStat.Stat(gray).stddev[0] > 10


def test_a_bad_config_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "classcam.toml"
    path.write_text('[device]\nid = "unit-1"\nroster_dir = "/nonexistent"\n')
    assert main(["notice-sheet", "--config", str(path)]) != 0
    assert re.search(r"roster_dir /nonexistent is not a directory", capsys.readouterr().err)
