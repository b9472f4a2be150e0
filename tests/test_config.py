"""The configuration: the documented default is valid; anything wrong stops the daemon with one
line naming the key."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appliance.config import ConfigError, load, parse

DEFAULT = Path(__file__).parent.parent / "config" / "classcam.toml"


def _default(tmp_path) -> dict:
    raw = tomllib.loads(DEFAULT.read_text())
    raw["device"]["roster_dir"] = str(tmp_path)
    return raw


def test_documented_default_is_valid_and_matches_the_built_in_defaults(tmp_path):
    config = parse(_default(tmp_path))
    built_in = parse({"device": {"id": "classcam-unit", "roster_dir": str(tmp_path)}})
    assert config == built_in


@pytest.mark.parametrize("change, message", [
    (lambda c: c["recording"].update(max_mins=5), "recording.max_mins: unknown key"),
    (lambda c: c.update(remote={"start": True}), "remote: unknown key"),
    (lambda c: c["recording"].update(max_minutes="90"),
     "recording.max_minutes: Input should be a valid number"),
    (lambda c: c["notice"].update(languages=["fr"]), "notice.languages.0: Input should be 'en' or 'cy'"),
    (lambda c: c["device"].pop("id"), "device.id: required key is missing"),
    (lambda c: c["device"].update(roster_dir="/nonexistent/teachers.d"),
     "device: roster_dir /nonexistent/teachers.d is not a directory"),
    (lambda c: c["recording"].update(max_minutes=-1),
     "recording.max_minutes: Input should be greater than 0"),
    (lambda c: c["upload"].update(url="https://account.example"),
     "upload: client_cert and client_key are required for https (the unit authenticates with its "
     "own key)"),
    (lambda c: c["upload"].update(url="https://account.example", client_cert="/nonexistent.pem",
                                  client_key="/nonexistent.key"),
     "upload: client_cert /nonexistent.pem is not a file"),
    (lambda c: c["upload"].update(chunk_mb=0), "upload.chunk_mb: Input should be greater than 0"),
    (lambda c: c["spool"].update(quota_mb="lots"), "spool.quota_mb: Input should be a valid number"),
])
def test_bad_config_names_the_key_and_the_reason(tmp_path, change, message):
    raw = _default(tmp_path)
    change(raw)
    with pytest.raises(ConfigError) as e:
        parse(raw, source="classcam.toml")
    assert str(e.value) == f"classcam.toml: {message}"


def test_corrupt_file_is_one_clear_line(tmp_path):
    path = tmp_path / "classcam.toml"
    path.write_bytes(b"[device\nid = ")
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load(path)


def test_daemon_with_a_bad_config_exits_with_one_journal_line(tmp_path):
    raw = DEFAULT.read_text().replace("max_minutes = 90", "max_minutes = 90\nstart_remotely = true")
    raw = raw.replace('/etc/classcam/teachers.d', str(tmp_path))
    path = tmp_path / "classcam.toml"
    path.write_text(raw)
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "run", "--hw", "sim",
                          "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 78
    lines = run.stderr.strip().splitlines()
    assert lines == [f"ERROR classcam: config: {path}: recording.start_remotely: unknown key"]
