"""The health message on its own: one size whatever it says, rounded numbers, nothing that names
a teacher, a recording or a file; and the fixed period's phase."""
from __future__ import annotations

import asyncio
import json
import time

from hypothesis import given, settings, strategies as st

from appliance.health.report import CHECKS, SIZE, HealthReport, decode, offline_message, scrub
from appliance.health.schedule import FixedPeriod

TEACHER = "t-evans"
RECORDING = "0123456789abcdef0123456789abcdef"


def _report(**overrides) -> HealthReport:
    fields = dict(device="sim-unit-1", version="0.1.0", period_s=300, uptime_s=12345.6,
                  disk_free_bytes=7 * 2**30 + 12345, backlog_bytes=0,
                  checks={name: None for name in CHECKS}, last_server_contact=time.time(),
                  at=time.time())
    fields.update(overrides)
    return HealthReport(**fields)


@settings(max_examples=200, deadline=None)
@given(reasons=st.dictionaries(st.sampled_from(CHECKS), st.text(max_size=2000)),
       device=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
       uptime=st.floats(0, 10 * 365 * 86400), free=st.integers(0, 2**50),
       backlog=st.integers(0, 2**50), period=st.sampled_from([0.5, 4.0, 300.0, 86400.0]))
def test_every_message_is_the_same_size_whatever_it_says(reasons, device, uptime, free, backlog,
                                                         period):
    report = _report(device=device, checks=reasons, uptime_s=uptime, disk_free_bytes=free,
                     backlog_bytes=backlog, period_s=period)
    payload = report.encode()
    assert len(payload) == SIZE
    fields = decode(payload)
    assert fields["status"] == ("fault" if reasons else "ok")
    assert set(fields["checks"]) == set(CHECKS)
    assert len(offline_message(device, "0.1.0")) == SIZE


def test_numbers_are_rounded_to_the_period_and_coarse_steps():
    fields = decode(_report(uptime_s=12345.6, disk_free_bytes=7 * 2**30 + 12345,
                            backlog_bytes=3 * 2**20, at=1_000_000_212.4,
                            last_server_contact=1_000_000_001.0).encode())
    assert fields["uptime_s"] == 12300 and fields["disk_free_mb"] == 7168
    assert fields["backlog"] == "under 100 MB"
    assert fields["at"] == "2001-09-09T01:50:00Z"
    assert fields["last_server_contact"] == "2001-09-09T01:45:00Z"


def test_reasons_lose_teacher_ids_recording_ids_and_paths():
    reason = (f"cannot write /var/lib/classcam/spool/{RECORDING}/seg-000003.ts.age for "
              f"{TEACHER}: No space left")
    text = scrub(reason, [TEACHER])
    assert TEACHER not in text and RECORDING not in text and "seg-000003" not in text
    assert text == "cannot write <path> for <teacher>: No space left"
    # The report scrubs paths and ids itself; teacher ids come from the roster (service.py).
    assert RECORDING not in _report(checks={"storage": reason}).encode().decode()
    assert len(scrub("x" * 500)) == 100


def test_garbage_is_refused_with_a_reason():
    for payload, why in ((b"\xff", "not JSON"), (b"[]", "not a version 1"),
                         (b'{"v":1,"status":"recording"}', "unknown status"),
                         (b'{"v":1,"status":"ok"}', "no checks")):
        try:
            decode(payload)
        except ValueError as e:
            assert str(e).startswith(why), e
        else:
            raise AssertionError(payload)


def test_the_phase_is_the_units_own_and_ticks_keep_to_the_period():
    a, b = FixedPeriod(300, "unit-a"), FixedPeriod(300, "unit-b")
    assert a.phase_s != b.phase_s and 0 <= a.phase_s < 300
    assert FixedPeriod(300, "unit-a").phase_s == a.phase_s  # the same after a restart

    async def three_ticks() -> list[float]:
        schedule = FixedPeriod(0.2, "unit-a")
        return [await schedule.wait() for _ in range(3)]
    ticks = asyncio.run(three_ticks())
    assert [round(b - a, 6) for a, b in zip(ticks, ticks[1:])] == [0.2, 0.2]


def test_json_has_no_field_about_recording():
    fields = json.loads(_report().encode())
    assert not any("record" in key or "teacher" in key for key in fields)
