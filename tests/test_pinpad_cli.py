"""`classcam-pinpad enrol | list | reset | remove`, as IT runs them."""
from __future__ import annotations

import os
import subprocess
import sys

from hwsim.lab import PASSPHRASE


def _pinpad(tmp_path, *args: str, pin: str | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "pinpad.toml"
    config.write_text(f'keystore = "{tmp_path / "pad"}"\n')
    env = dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE)
    if pin is not None:
        env["CLASSCAM_PIN"] = pin
    return subprocess.run([sys.executable, "-m", "pinpad.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_enrol_list_reset_remove(tmp_path, lab_template):
    files = lab_template.key_files("t-jones")
    short = _pinpad(tmp_path, "enrol", "--card", str(files.card), "--signing-key",
                    str(files.signing_key), pin="12345")
    assert short.returncode == 1 and "6 to 12 digits" in short.stderr
    assert not (tmp_path / "pad").exists() or not any((tmp_path / "pad").iterdir())
    made = _pinpad(tmp_path, "enrol", "--card", str(files.card), "--signing-key",
                   str(files.signing_key), "--number", "7", pin="550011")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "t-jones is teacher number 7 on this pad (key on the pad)"
    listed = _pinpad(tmp_path, "list")
    assert listed.stdout.split() == ["7", "t-jones", "T", "Jones", "key", "on", "the", "pad",
                                     "0/5", "wrong", "PINs"]
    assert _pinpad(tmp_path, "reset", "t-jones").returncode == 0
    assert _pinpad(tmp_path, "remove", "7").returncode == 0
    assert _pinpad(tmp_path, "list").stdout == ""


def test_a_card_without_a_security_key_needs_the_signing_key(tmp_path, lab_template):
    files = lab_template.key_files("t-jones")
    run = _pinpad(tmp_path, "enrol", "--card", str(files.card))
    assert run.returncode == 1 and "names no security key" in run.stderr
