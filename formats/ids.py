"""The id rules, defined once: every part of the unit, the teacher's tools and the reference
account server checks a teacher id, device id, recording id or file name here, whole-string
(`re.fullmatch`), so a value one accepts is never one another refuses.

    is_teacher_id("t-evans")       # True
    is_teacher_id("t-evans\\n")     # False: `^...$` with `re.match` would have let this through
    teacher_id_problem("T-Evans")  # "teacher_id 'T-Evans' must be 1-64 of a-z 0-9 . _ - ..."
"""
from __future__ import annotations

import re

TEACHER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
RECORDING_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
# The files of a recording, as the unit names them and the account API addresses them.
FILE_NAME = re.compile(r"seg-[0-9]{6}\.ts\.age|manifest\.age", re.ASCII)

TEACHER_ID_RULE = "1-64 of a-z 0-9 . _ - starting with a letter or digit"
DEVICE_ID_RULE = "1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"


def is_teacher_id(value: object) -> bool:
    return _whole(TEACHER_ID, value)


def is_device_id(value: object) -> bool:
    return _whole(DEVICE_ID, value)


def is_recording_id(value: object) -> bool:
    return _whole(RECORDING_ID, value)


def is_file_name(value: object) -> bool:
    """A name the unit gives a recording's file: `seg-NNNNNN.ts.age` or `manifest.age`."""
    return _whole(FILE_NAME, value)


def teacher_id_problem(value: object) -> str | None:
    """None for a valid teacher id, else one line saying what is wrong (showing the value as
    Python writes it, so a trailing newline or a look-alike character is visible)."""
    if is_teacher_id(value):
        return None
    return f"teacher_id {value!r:.80} must be {TEACHER_ID_RULE}"


def device_id_problem(value: object) -> str | None:
    """None for a valid device id, else one line saying what is wrong."""
    if is_device_id(value):
        return None
    return f"device id {value!r:.80} must be {DEVICE_ID_RULE}"


def _whole(rule: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and rule.fullmatch(value) is not None
