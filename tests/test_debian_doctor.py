"""`classcam doctor`: what a unit still needs before its daemon may run. The Debian package
enables classcam.service on a first install only when it exits 0 (debian/classcam.postinst), so
these are the rules of "configured" that issue 10 asks for: a device id of its own and uploads
set up, with credentials the daemon can read, and no swap that could hold its memory (P4)."""
from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from appliance.health import readiness as doctor
from appliance.cli import main as cli

REPO = Path(__file__).resolve().parent.parent


def _unit(tmp_path: Path, device_id: str = "room-12", upload: dict | None = None) -> Path:
    """A unit's configuration under `tmp_path`, with its roster and state directories."""
    (tmp_path / "teachers.d").mkdir()
    (tmp_path / "var").mkdir()
    lines = ["[device]", f'id = "{device_id}"', f'roster_dir = "{tmp_path / "teachers.d"}"',
             f'state_dir = "{tmp_path / "var"}"']
    if upload is not None:
        lines.append("[upload]")
        lines += [f'{key} = "{value}"' for key, value in upload.items()]
    path = tmp_path / "classcam.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _credentials(tmp_path: Path) -> dict:
    for name, mode in (("device.crt", 0o644), ("device.key", 0o640)):
        (tmp_path / name).write_text("not parsed by the doctor\n")
        (tmp_path / name).chmod(mode)
    return {"url": "https://recordings.example.sch.uk", "client_cert": tmp_path / "device.crt",
            "client_key": tmp_path / "device.key"}


def _doctor(config: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = doctor.report(config, out)
    return status, out.getvalue().splitlines()


def _missing(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("missing: ")]


@pytest.fixture(autouse=True)
def no_host_swap(monkeypatch):
    """The host's own swap is not the unit's; the swap rule has tests of its own."""
    monkeypatch.setattr(doctor, "_swap", lambda: [])


def test_the_shipped_configuration_is_not_a_configured_unit():
    # The conffile every unit is installed with: its device id is the example the doctor knows.
    shipped = tomllib.loads((REPO / "config" / "classcam.toml").read_text())
    assert shipped["device"]["id"] == doctor.EXAMPLE_DEVICE_ID
    assert shipped["upload"]["url"] == ""


def test_example_device_id_and_no_uploads_are_missing(tmp_path):
    status, lines = _doctor(_unit(tmp_path, device_id=doctor.EXAMPLE_DEVICE_ID))
    assert status == 1
    missing = _missing(lines)
    assert len(missing) == 2, lines
    assert missing[0].startswith('missing: device.id is still the example "classcam-unit"')
    assert missing[1].startswith("missing: upload.url is not set")
    assert lines[-1] == "2 thing(s) missing"


def test_a_unit_with_its_own_id_and_uploads_is_ready(tmp_path):
    status, lines = _doctor(_unit(tmp_path, upload=_credentials(tmp_path)))
    assert _missing(lines) == []
    assert status == 0
    assert lines[-1] == "ready: nothing missing"
    # What IT should still hear about, without it stopping the unit.
    assert "note: no teacher is enrolled: nobody can record until IT runs " \
           "`classcam roster add CARD`" in lines
    assert "note: the device key is made when the daemon first starts" in lines


def test_a_configuration_error_is_the_one_thing_missing(tmp_path):
    config = _unit(tmp_path)
    config.write_text(config.read_text() + "[recording]\nmax_mins = 5\n")
    status, lines = _doctor(config)
    assert status == 1
    assert _missing(lines) == [f"missing: {config}: recording.max_mins: unknown key"]


def test_plain_http_uploads_are_missing(tmp_path):
    # The daemon refuses plain HTTP to anything but loopback in simulation; so does the doctor.
    status, lines = _doctor(_unit(tmp_path, upload={"url": "http://recordings.example.sch.uk"}))
    assert status == 1
    assert len(_missing(lines)) == 1 and _missing(lines)[0].startswith("missing: upload.url: ")


def test_a_key_the_daemon_cannot_read_is_missing(tmp_path, monkeypatch):
    # The daemon's user here is "nobody" (no classcam user on a developer's machine): a key
    # that only root can read is one the daemon could not open at its first upload.
    monkeypatch.setattr(doctor, "DAEMON_USER", "nobody")
    upload = _credentials(tmp_path)
    upload["client_key"].chmod(0o600)
    status, lines = _doctor(_unit(tmp_path, upload=upload))
    assert status == 1
    assert _missing(lines) == [f"missing: upload.client_key {upload['client_key']} is not "
                               "readable by user nobody: install -o root -g nobody -m 0640"]


def test_a_key_every_user_can_read_is_a_note(tmp_path):
    upload = _credentials(tmp_path)
    upload["client_key"].chmod(0o644)
    status, lines = _doctor(_unit(tmp_path, upload=upload))
    assert status == 0
    assert f"note: upload.client_key {upload['client_key']} is readable by every user: " \
           "chmod 0640 it" in lines


def test_sealed_files_waiting_in_the_spool_are_counted(tmp_path):
    config = _unit(tmp_path, upload=_credentials(tmp_path))
    recording = tmp_path / "var" / "spool" / ("ab" * 16)
    recording.mkdir(parents=True)
    for name in ("seg-000001.ts.age", "seg-000002.ts.age", "manifest.age"):
        (recording / name).write_bytes(b"x" * 500_000)
    (recording / "recording.json").write_text("{}")
    _, lines = _doctor(config)
    assert "note: 3 sealed file(s), 1.5 MB, wait in the spool to be uploaded" in lines


SWAPS_HEADER = "Filename\tType\tSize\tUsed\tPriority\n"


def test_swap_on_disk_without_the_memory_controller_is_missing():
    findings = doctor.swap_findings(SWAPS_HEADER + "/var/swap  file  102396  0  -2\n",
                                    "cpuset cpu io pids")
    assert [f.missing for f in findings] == [True]
    assert findings[0].text.startswith("swap on /var/swap and no cgroup memory controller")


def test_swap_on_disk_with_the_memory_controller_is_a_note():
    findings = doctor.swap_findings(SWAPS_HEADER + "/var/swap  file  102396  0  -2\n",
                                    "cpuset cpu io memory pids")
    assert [f.missing for f in findings] == [False]


def test_swap_in_ram_or_none_is_not_mentioned():
    assert doctor.swap_findings(SWAPS_HEADER + "/dev/zram0  partition  1024  0  100\n", "") == []
    assert doctor.swap_findings(SWAPS_HEADER, "") == []


def test_the_command_line_runs_the_doctor(tmp_path, capsys):
    assert cli(["doctor", "--setup", "--config", str(_unit(tmp_path, upload=_credentials(tmp_path)))]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ready: nothing missing"
