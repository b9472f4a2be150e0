"""Id rules shared by the unit, the teacher's tools and the account server.

One definition of each, so that an id one side accepts is never one another side refuses (a
teacher id enrolled on the unit but refused by the account server would have its uploads refused
forever). Each rule matches a *whole* string: `re.match` with `^...$` also accepts a trailing
newline, `fullmatch` does not.

    is_teacher_id("t-evans")     True
    is_teacher_id("t-evans\\n")   False
"""
from __future__ import annotations

import re

TEACHER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)
RECORDING_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)

TEACHER_ID_RULE = "1-64 of a-z 0-9 . _ - starting with a letter or digit"


def is_teacher_id(value: object) -> bool:
    """True if `value` is a whole teacher id: 1-64 of a-z 0-9 . _ -, starting with a letter or
    digit (so it is also a safe file name and URL path segment)."""
    return isinstance(value, str) and TEACHER_ID.fullmatch(value) is not None


def is_recording_id(value: object) -> bool:
    """True if `value` is a whole recording id: 32 lowercase hex digits."""
    return isinstance(value, str) and RECORDING_ID.fullmatch(value) is not None
