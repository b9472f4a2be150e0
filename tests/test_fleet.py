"""`classcam fleet` against three simulated units on a real Mosquitto: one healthy, one whose
speaker fails, one killed."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
import time

from tests.health_lab import it_watching, wait_until
from tests.mqtt_broker import IT_USER


def fleet(broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "fleet", "--broker", "127.0.0.1", "--port",
         str(broker.port), "--ca", str(broker.ca), "--username", IT_USER, "--password-file",
         str(broker.password_file(IT_USER)), "--wait", "5", *args],
        capture_output=True, text=True, timeout=60, env=dict(os.environ))


def _status(it, device: str) -> str | None:
    received = it.received(f"classcam/{device}/health")
    return json.loads(received[-1][1].payload)["status"] if received else None


def test_fleet_prints_one_line_per_unit_and_fails_on_a_fault_or_an_offline_unit(
        lab_template, short_dir, broker):
    labs = {}
    for n in (1, 2, 3):
        lab = lab_template.copy(short_dir / f"u{n}")
        device = f"sim-unit-{n}"
        lab.settings["device"] = {"id": device}
        lab.settings["health"] = broker.unit_settings(device, 0.5)
        labs[device] = lab
    it = it_watching(broker)
    with contextlib.ExitStack() as stack:
        units = {}
        for device, lab in labs.items():
            stack.enter_context(lab.account())
            units[device] = stack.enter_context(lab.daemon())
        for device in labs:
            wait_until(lambda d=device: _status(it, d) == "ok", 15, f"{device} not ok")
        # The healthy unit: what IT sees when all is well.
        healthy = fleet(broker, "--json")
        assert healthy.returncode == 0, healthy.stderr
        assert [u["device"] for u in json.loads(healthy.stdout)] == list(labs)
        # sim-unit-2's amplifier dies; the unit finds out when a teacher tries to record.
        speaker = units["sim-unit-2"]
        speaker.control("fault", name="speaker", on=True)
        speaker.control("press")
        speaker.wait_state("armed")
        speaker.control("pin", teacher="t-evans", pin="432187")
        wait_until(lambda: _status(it, "sim-unit-2") == "fault", 10, "no speaker fault")
        # sim-unit-3 loses power.
        units["sim-unit-3"].kill()
        killed_at = datetime.datetime.now(datetime.UTC)
        wait_until(lambda: _status(it, "sim-unit-3") == "offline", 10, "no last will")
        time.sleep(1.2)  # the offline time is the will's, not the time fleet is run
        text = fleet(broker)
        as_json = fleet(broker, "--json")
    it.close()
    assert text.returncode == 1 and as_json.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == "sim-unit-1  ok"
    assert lines[1] == "sim-unit-2  fault: speaker: speaker: simulated amplifier failure"
    offline = re.fullmatch(r"sim-unit-3  offline since (\S+)", lines[2])
    assert offline, lines[2]
    since = datetime.datetime.strptime(offline.group(1), "%Y-%m-%dT%H:%M:%S%z")
    assert abs((since - killed_at).total_seconds()) <= 2, (since, killed_at)
    units_json = {u["device"]: u for u in json.loads(as_json.stdout)}
    assert {d: (u["status"], u["ok"]) for d, u in units_json.items()} == {
        "sim-unit-1": ("ok", True), "sim-unit-2": ("fault", False),
        "sim-unit-3": ("offline", False)}
    assert units_json["sim-unit-2"]["failing"] == {
        "speaker": "fault: speaker: simulated amplifier failure"}
    # Both runs read the same will: its time comes from the broker's message expiry, which
    # counts whole seconds, so two runs a moment apart may round it to neighbouring seconds.
    since_json = datetime.datetime.strptime(units_json["sim-unit-3"]["since"],
                                            "%Y-%m-%dT%H:%M:%S%z")
    assert abs((since_json - since).total_seconds()) <= 1, (since_json, since)


def test_fleet_says_in_one_line_when_it_cannot_log_in(broker):
    broker.password_file(IT_USER).write_text("wrong\n")
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "fleet", "--broker", "127.0.0.1", "--port",
         str(broker.port), "--ca", str(broker.ca), "--username", IT_USER, "--password-file",
         str(broker.directory / f"{IT_USER}.password")], capture_output=True, text=True,
        timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("classcam: the broker at 127.0.0.1:") and \
        len(run.stderr.strip().splitlines()) == 1, run.stderr
