"""`classcam notice-sheet`: a notice for the classroom door and a fact sheet for the school's
data-protection lead, made from the unit's configuration, in English, Welsh or both, as PDF or
PNG.

    sheets = notice_sheets(config, names=["Ms Evans"], languages=["cy", "en"])
    write(sheets, Path("out"), "pdf")      # out/room-notice.pdf, out/fact-sheet.pdf

What they say comes from the configuration, so it stays true when the configuration changes:
what is recorded (video and audio; privacy zones), who can start it (teachers enrolled on the
unit; named only if `privacy.name_teachers`), where it goes (the host of `upload.url`), who can
read it (the teacher alone), how long it stays on the unit (until the account server confirms
it; `spool.quota_mb` at most), and whom to ask for deletion (`privacy.contact`).

Welsh: sentences marked `# seed` take their wording from the NASUWT/ASCL protocol's Welsh text
(/work/shared/seeds); every other Welsh sentence here was written for classcam and NEEDS REVIEW
BY A WELSH SPEAKER before a school puts it on a door.

The text is set in DejaVu Sans (Debian's fonts-dejavu-core), which has the Welsh letters (ŵ, ŷ)
that the PDF's base fonts lack; PDFs embed it, so their text can be searched and read aloud.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from appliance.config import Config

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"

Language = Literal["en", "cy"]
Style = Literal["title", "heading", "body", "bullet", "small"]


class NoticeSheetError(Exception):
    """The sheets cannot be made; `str()` says why and what to do."""


@dataclass(frozen=True)
class Block:
    style: Style
    text: str


@dataclass(frozen=True)
class Sheet:
    """One document: its file name (without extension), and per language its blocks, in order.
    `own_pages`: each language on its own page (PDF), else one after the other."""

    name: str
    languages: list[tuple[Language, list[Block]]]
    own_pages: bool
    scale: float = 1.0  # of the type sizes (a door notice in two languages fits one page)


@dataclass(frozen=True)
class Facts:
    """What the sheets state, read from the configuration."""

    place: str
    device_id: str
    host: str | None
    contact: str | None
    names: list[str] | None
    zones: int
    quota_mb: float
    max_minutes: float
    spoken: list[str]
    audio_mode: str = "room"  # [audio] mode: "room", "teacher" or "none" (video only)


def facts(config: Config, names: list[str]) -> Facts:
    """The facts of `config`; `names` are the enrolled teachers' display names (shown only if
    `privacy.name_teachers`)."""
    privacy = config.privacy
    host = urlsplit(config.upload.url).hostname if config.upload.url else None
    return Facts(place=privacy.place or config.device.id, device_id=config.device.id,
                 host=host, contact=privacy.contact or None,
                 names=sorted(names) if privacy.name_teachers else None,
                 zones=len(privacy.zones), quota_mb=config.spool.quota_mb,
                 max_minutes=config.recording.max_minutes, spoken=list(config.notice.languages),
                 audio_mode=config.audio.mode)


def notice_sheets(config: Config, names: list[str], languages: list[Language]) -> list[Sheet]:
    """The room notice and the fact sheet, each in `languages`, in that order."""
    f = facts(config, names)
    return [Sheet("room-notice", [(lang, ROOM[lang](f)) for lang in languages], own_pages=False,
                  scale=1.0 if len(languages) == 1 else 0.75),
            Sheet("fact-sheet", [(lang, FACTS[lang](f)) for lang in languages], own_pages=True)]


def write(sheets: list[Sheet], directory: Path, fmt: Literal["pdf", "png"]) -> list[Path]:
    """Write each sheet as `<directory>/<name>.<fmt>`; returns the paths written."""
    for font in (FONT, FONT_BOLD):
        if not font.is_file():
            raise NoticeSheetError(f"{font} is missing: install fonts-dejavu-core")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for sheet in sheets:
        path = directory / f"{sheet.name}.{fmt}"
        (_pdf if fmt == "pdf" else _png)(sheet, path)
        paths.append(path)
    return paths


# -- the words ------------------------------------------------------------------------------

def _mb(quota_mb: float) -> str:
    return f"{quota_mb:g} MB"


def _room_en(f: Facts) -> list[Block]:
    blocks = [Block("title", "Classroom camera"), Block("heading", f.place),
              Block("body", "A camera in this room can record "
                            + ("video only (no sound)" if f.audio_mode == "none"
                               else "video and audio") + " of lessons, for "
                            "the teacher's own professional development and training only.")]
    if f.zones:
        blocks.append(Block("bullet", "Parts of the picture are blanked out in the camera before "
                                      "anything is recorded."))
    blocks += [
        Block("bullet", "Only a teacher enrolled on this camera can start it: at the camera, "
                        "with their own PIN. Nobody can start it from elsewhere."),
        *_names_en(f),
        Block("bullet", "Before it records, it says so aloud. While it records, its red light "
                        "is on."),
        Block("bullet", _where_en(f) + " Only that teacher can watch it: not the school, not "
                        "IT, not the server."),
        Block("bullet", _stays_en(f)),
        Block("bullet", "To ask for a recording to be deleted: " + _contact_en(f) + "."),
    ]
    return blocks


def _room_cy(f: Facts) -> list[Block]:
    blocks = [Block("title", "Camera'r ystafell ddosbarth"), Block("heading", f.place),
              # seed: "recordio fideo a sain", "i ddiben eu datblygiad proffesiynol a'u
              # hyfforddiant yn unig"; the sentence around them needs review.
              Block("body", "Gall camera yn yr ystafell hon recordio "
                            + ("fideo yn unig (heb sain)" if f.audio_mode == "none"
                               else "fideo a sain") + " o wersi, at "
                            "ddiben datblygiad proffesiynol a hyfforddiant yr athro yn unig.")]
    if f.zones:
        # Needs review by a Welsh speaker.
        blocks.append(Block("bullet", "Mae rhannau o'r llun yn cael eu cuddio yn y camera cyn "
                                      "i ddim gael ei recordio."))
    blocks += [
        # seed: "Ni fydd camerâu'n cael eu rhoi ymlaen heb ganiatâd penodol yr athro."; the
        # second sentence needs review by a Welsh speaker.
        Block("bullet", "Ni fydd y camera'n cael ei roi ymlaen heb ganiatâd penodol yr athro. "
                        "Dim ond athro sydd wedi'i gofrestru ar y camera hwn all ei ddechrau: "
                        "wrth y camera, gyda'i PIN ei hun. Ni all neb ei ddechrau o rywle arall."),
        *_names_cy(f),
        # Needs review by a Welsh speaker.
        Block("bullet", "Cyn iddo recordio, mae'n dweud hynny'n uchel. Tra bydd yn recordio, "
                        "mae ei olau coch ymlaen."),
        # seed: "Ni roddir unrhyw hawl i weinyddwr i gael mynediad o bell nac i weld gwers heb
        # ganiatâd yr athro."; the sentence before it needs review.
        Block("bullet", _where_cy(f) + " Dim ond yr athro hwnnw all ei wylio. Ni roddir unrhyw "
                        "hawl i weinyddwr i gael mynediad o bell nac i weld gwers heb ganiatâd "
                        "yr athro."),
        Block("bullet", _stays_cy(f)),
        # Needs review by a Welsh speaker.
        Block("bullet", "I ofyn am ddileu recordiad: " + _contact_cy(f) + "."),
    ]
    return blocks


def _facts_en(f: Facts) -> list[Block]:
    return [
        Block("title", "Classroom camera: fact sheet for the data-protection lead"),
        Block("heading", f"{f.place} (unit {f.device_id})"),
        Block("heading", "What is recorded"),
        Block("body", {"room": "Video and audio of the lesson, from the camera and microphone "
                               "of the unit",
                       "teacher": "Video of the lesson from the unit's camera, and audio from "
                                  "the teacher's own microphone only (the room's is never "
                                  "opened)",
                       "none": "Video only, from the unit's camera: no sound is recorded"
                       }[f.audio_mode]
                      + f", for at most {f.max_minutes:g} minutes at a time. "
                      + (f"{f.zones} privacy zone(s) are blanked out in every frame before it "
                         "is encoded: what is behind them is never recorded."
                         if f.zones else "No privacy zones are set: the whole picture is "
                                         "recorded.")),
        Block("heading", "Who can start it"),
        Block("body", "Only a teacher enrolled on this unit, at the unit, with their own PIN "
                      "(a signed start token checked by the unit). There is no remote start: "
                      "not over the network, not from the configuration. Before capture "
                      "starts the red light goes on and the unit speaks a notice ("
                      + ", ".join({"en": "English", "cy": "Welsh"}[s] for s in f.spoken)
                      + ")."),
        *_names_en(f),
        Block("heading", "Where it goes"),
        Block("body", _where_en(f) + " Each part is encrypted on the unit as it is recorded "
                      "(age, X25519) to that teacher's own key; nothing unencrypted is stored."),
        Block("heading", "Who can read it"),
        Block("body", "Only the teacher who recorded it, with their own key. The school, IT, the "
                      "account server and the unit itself cannot decrypt it. The unit's health "
                      "reports to IT carry no teacher's name and do not say when it records."),
        Block("heading", "How long it stays on the unit"),
        Block("body", _stays_en(f) + " The teacher can discard a recording before it is "
                      "uploaded."),
        Block("heading", "How to ask for deletion"),
        Block("body", _contact_en(f) + ". A recording that has been uploaded is deleted by the "
                      "teacher from their own account."),
    ]


def _facts_cy(f: Facts) -> list[Block]:
    # Needs review by a Welsh speaker, except the sentences marked "seed".
    langs = {"en": "Saesneg", "cy": "Cymraeg"}
    return [
        Block("title", "Camera'r ystafell ddosbarth: taflen ffeithiau i'r arweinydd diogelu data"),
        Block("heading", f"{f.place} (uned {f.device_id})"),
        Block("heading", "Beth sy'n cael ei recordio"),
        # Needs review by a Welsh speaker (the "teacher" and "none" wording).
        Block("body", {"room": "Fideo a sain o'r wers, o gamera a meicroffon yr uned",
                       "teacher": "Fideo o'r wers o gamera'r uned, a sain o feicroffon yr "
                                  "athro ei hun yn unig (nid yw meicroffon yr ystafell byth yn "
                                  "cael ei agor)",
                       "none": "Fideo yn unig, o gamera'r uned: nid oes sain yn cael ei "
                               "recordio"}[f.audio_mode]
                      + f", am {f.max_minutes:g} munud ar y mwyaf ar y tro. "
                      + (f"Mae {f.zones} parth preifatrwydd yn cael eu cuddio ym mhob ffrâm cyn "
                         "ei hamgodio: nid yw'r hyn sydd y tu ôl iddynt byth yn cael ei recordio."
                         if f.zones else "Nid oes parthau preifatrwydd wedi'u gosod: mae'r llun "
                                         "cyfan yn cael ei recordio.")),
        Block("heading", "Pwy all ei ddechrau"),
        Block("body", "Dim ond athro sydd wedi'i gofrestru ar yr uned hon, wrth yr uned, gyda'i "
                      "PIN ei hun. Nid oes modd ei ddechrau o bell. Cyn i'r recordio ddechrau "
                      "mae'r golau coch yn dod ymlaen ac mae'r uned yn llefaru hysbysiad ("
                      + ", ".join(langs[s] for s in f.spoken) + ")."),
        *_names_cy(f),
        Block("heading", "I ble mae'n mynd"),
        Block("body", _where_cy(f) + " Mae pob rhan yn cael ei hamgryptio ar yr uned wrth ei "
                      "recordio (age, X25519) i allwedd yr athro ei hun; nid oes dim heb ei "
                      "amgryptio yn cael ei gadw."),
        Block("heading", "Pwy all ei ddarllen"),
        # seed: "Ni roddir unrhyw hawl i weinyddwr i gael mynediad o bell nac i weld gwers heb
        # ganiatâd yr athro."
        Block("body", "Dim ond yr athro a'i recordiodd, gyda'i allwedd ei hun. Ni all yr ysgol, "
                      "TG, y gweinydd na'r uned ei hun ei ddadgryptio. Ni roddir unrhyw hawl i "
                      "weinyddwr i gael mynediad o bell nac i weld gwers heb ganiatâd yr athro."),
        Block("heading", "Am ba hyd y mae'n aros ar yr uned"),
        Block("body", _stays_cy(f) + " Gall yr athro ddileu recordiad cyn iddo gael ei "
                      "uwchlwytho."),
        Block("heading", "Sut i ofyn am ddileu"),
        # seed: "Mae'r athro unigol yn cadw'r hawl i ddileu fideo ar unrhyw adeg."
        Block("body", _contact_cy(f) + ". Mae'r athro unigol yn cadw'r hawl i ddileu fideo ar "
                      "unrhyw adeg."),
    ]


def _names_en(f: Facts) -> list[Block]:
    if f.names is None:
        return []
    return [Block("small", "Teachers enrolled: " + (", ".join(f.names) or "none yet") + ".")]


def _names_cy(f: Facts) -> list[Block]:
    if f.names is None:
        return []
    # Needs review by a Welsh speaker.
    return [Block("small", "Athrawon sydd wedi'u cofrestru: " + (", ".join(f.names) or "dim eto")
                  + ".")]


def _where_en(f: Facts) -> str:
    if f.host is None:
        return ("Recordings are encrypted and are not sent anywhere yet (no upload server is "
                "set): they wait on the unit for the teacher's account.")
    return f"Each recording is encrypted and sent only to the teacher's own account at {f.host}."


def _where_cy(f: Facts) -> str:
    if f.host is None:
        # Needs review by a Welsh speaker.
        return ("Mae recordiadau wedi'u hamgryptio ac nid ydynt yn cael eu hanfon i unman eto "
                "(nid oes gweinydd uwchlwytho wedi'i osod): maent yn aros ar yr uned.")
    # seed: "Mae'r fideo'n cael ei lwytho i fyny i gyfrif defnyddiwr yr athro"
    return (f"Mae'r fideo'n cael ei amgryptio a'i lwytho i fyny i gyfrif defnyddiwr yr athro yn "
            f"{f.host} yn unig.")


def _stays_en(f: Facts) -> str:
    return ("A recording stays on the unit, encrypted, only until the account server confirms "
            f"it has it; then it is deleted from the unit. The unit keeps at most "
            f"{_mb(f.quota_mb)} of recordings.")


def _stays_cy(f: Facts) -> str:
    # Needs review by a Welsh speaker.
    return ("Mae recordiad yn aros ar yr uned, wedi'i amgryptio, dim ond nes bod y gweinydd yn "
            "cadarnhau ei fod wedi'i dderbyn; yna caiff ei ddileu o'r uned. Mae'r uned yn cadw "
            f"{_mb(f.quota_mb)} o recordiadau ar y mwyaf.")


def _contact_en(f: Facts) -> str:
    return f.contact or "ask the teacher who made the recording"


def _contact_cy(f: Facts) -> str:
    # Needs review by a Welsh speaker.
    return f.contact or "gofynnwch i'r athro a wnaeth y recordiad"


ROOM: dict[Language, Callable[[Facts], list[Block]]] = {"en": _room_en, "cy": _room_cy}
FACTS: dict[Language, Callable[[Facts], list[Block]]] = {"en": _facts_en, "cy": _facts_cy}


# -- the renderers -------------------------------------------------------------------------

_SIZES: dict[Style, tuple[float, bool, float]] = {  # points, bold, space after (points)
    "title": (26, True, 8), "heading": (15, True, 6), "body": (12, False, 8),
    "bullet": (13, False, 7), "small": (10, False, 6)}


def _pdf(sheet: Sheet, path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer
    from xml.sax.saxutils import escape

    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT)))
    pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(FONT_BOLD)))
    k = sheet.scale
    styles = {name: ParagraphStyle(name, fontName="DejaVuSans-Bold" if bold else "DejaVuSans",
                                   fontSize=size * k, leading=size * k * 1.25,
                                   spaceAfter=after * k,
                                   leftIndent=12 * mm if name == "bullet" else 0,
                                   bulletIndent=4 * mm, bulletFontName="DejaVuSans")
              for name, (size, bold, after) in _SIZES.items()}
    story: list = []
    for i, (_, blocks) in enumerate(sheet.languages):
        if i:
            story.append(PageBreak() if sheet.own_pages else Spacer(1, 10 * mm))
        for block in blocks:
            story.append(Paragraph(escape(block.text), styles[block.style],
                                   bulletText="•" if block.style == "bullet" else None))
    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=18 * mm, bottomMargin=18 * mm, title=sheet.name,
                            lang=sheet.languages[0][0] if sheet.languages else "en")
    doc.build(story)


def _png(sheet: Sheet, path: Path) -> None:
    """All the sheet's languages, one after the other, on one A4-wide image at 150 dpi."""
    from PIL import Image, ImageDraw, ImageFont

    scale = 150 / 72 * sheet.scale  # points to pixels
    width, margin = round(595 * 150 / 72), round(50 * 150 / 72)
    fonts = {name: ImageFont.truetype(str(FONT_BOLD if bold else FONT), round(size * scale))
             for name, (size, bold, _) in _SIZES.items()}
    lines: list[tuple[int, int, str, ImageFont.FreeTypeFont]] = []  # y, x, text, font
    y = margin
    for i, (_, blocks) in enumerate(sheet.languages):
        if i:
            y += round(30 * scale)
        for block in blocks:
            size, _, after = _SIZES[block.style]
            font = fonts[block.style]
            indent = round(24 * scale) if block.style == "bullet" else 0
            wrapped = _wrap(block.text, font, width - 2 * margin - indent)
            for n, line in enumerate(wrapped):
                if block.style == "bullet" and n == 0:
                    lines.append((y, margin + round(8 * scale), "•", font))
                lines.append((y, margin + indent, line, font))
                y += round(size * 1.25 * scale)
            y += round(after * scale)
    image = Image.new("RGB", (width, max(y + margin, round(842 * 150 / 72))), "white")
    draw = ImageDraw.Draw(image)
    for top, left, text, font in lines:
        draw.text((left, top), text, fill="black", font=font)
    image.save(path, format="PNG")


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels (at word boundaries)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines
