"""`classcam doctor`: every check with its fix, run inside the daemon; it never opens camera or
microphone, and leaves them, the speaker and the LED alone while the unit is busy."""
from __future__ import annotations

import subprocess
import sys

from hwsim.invariants import check_all, device_intervals, led_intervals
from appliance.health.report import CHECKS


def doctor(lab) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "doctor", "--config",
                           str(lab.config_path)], capture_output=True, text=True, timeout=60)


def _health(run) -> list[str]:
    """The health checks' lines: what follows the setup part's last line (tests/
    test_debian_doctor.py reads that part)."""
    lines = run.stdout.splitlines()
    end = next(n for n, l in enumerate(lines)
               if l == "ready: nothing missing" or l.endswith("thing(s) missing"))
    return lines[end + 1:]


def _states(run) -> dict[str, str]:
    lines = [l for l in _health(run) if not l.startswith("  fix: ")]
    return {l.split(":", 1)[0]: l.split(":", 2)[1].strip() for l in lines}


def test_doctor_on_a_healthy_idle_unit_passes_every_check_and_opens_nothing(lab):
    with lab.account(), lab.daemon():
        run = doctor(lab)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _states(run) == {name: "ok" for name in CHECKS}, run.stdout
    events = lab.timeline()
    assert device_intervals(events) == [] and led_intervals(events) == []
    # The speaker was tried with a short tone, not a notice.
    assert [e["label"] for e in events if e["ev"] == "notice" and e["phase"] == "end"] == ["check"]


def test_doctor_names_each_failing_check_with_its_fix_and_exits_non_zero(lab):
    with lab.daemon() as unit:  # no upload server configured
        unit.control("fault", name="camera", on=True)
        unit.control("fault", name="speaker", on=True)
        run = doctor(lab)
        assert unit.state() == "idle"
    assert run.returncode == 1
    lines = _health(run)
    assert "camera: fault: camera: not found" in lines
    assert "speaker: fault: speaker: simulated amplifier failure" in lines
    assert "server: fault: no upload server configured ([upload] url)" in lines
    for failing in ("camera", "speaker", "server"):
        i = next(n for n, l in enumerate(lines) if l.startswith(f"{failing}: fault"))
        assert lines[i + 1].startswith("  fix: "), lines
    assert device_intervals(lab.timeline()) == []


def test_doctor_while_recording_leaves_the_devices_alone_and_says_they_are_in_use(lab):
    with lab.account(), lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        before = lab.timeline()
        run = doctor(lab)
        during = lab.timeline()[len(before):]
        assert unit.state() == "recording"
        assert unit.control("status")["open"] == ["camera", "microphone"]
        unit.control("press")
        unit.wait_state("idle")
    assert run.returncode == 0, run.stdout
    states = _states(run)
    assert {n: states[n] for n in ("camera", "microphone", "speaker", "led")} == {
        "camera": "in use", "microphone": "in use", "speaker": "in use", "led": "in use"}
    assert [e for e in during if e["ev"] in ("device", "notice", "state")] == []
    assert not [e for e in during if e["ev"] == "pin" and e["name"] == "recording_led"]
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []


def test_doctor_without_a_daemon_says_so_and_checks_what_it_can(lab):
    run = doctor(lab)
    assert run.returncode == 1
    lines = _health(run)
    assert lines[0].startswith("daemon: fault: not running")
    assert lines[1].startswith("  fix: systemctl start classcam")
    assert "clock: ok" in lines and "storage: ok" in lines
