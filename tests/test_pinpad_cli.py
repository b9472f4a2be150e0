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


def test_run_connects_to_the_unit_reports_a_missing_keypad_once_and_stops_on_sigterm(tmp_path):
    # The real service process: python-evdev cannot open the keypad (there is none), the
    # service says so once and keeps trying, while its link to the unit is up.
    import signal
    import socket
    import time

    sock_path = tmp_path / "unit.sock"
    unit = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unit.bind(str(sock_path))
    unit.listen(1)
    unit.settimeout(30)
    config = tmp_path / "pinpad.toml"
    config.write_text(f'keystore = "{tmp_path / "pad"}"\nsocket = "{sock_path}"\n'
                      f'keypad = "{tmp_path / "no-keypad-event"}"\nfeedback = "none"\n')
    proc = subprocess.Popen([sys.executable, "-m", "pinpad.cli", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        conn, _ = unit.accept()  # the pad connected to the unit
        conn.close()
        time.sleep(3)  # several tries to open the keypad (0.2 s, 0.4 s, 0.8 s, ...)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        unit.close()
    assert proc.returncode == 0, out
    lost = [line for line in out.splitlines() if line.startswith("keypad: cannot read")]
    assert len(lost) == 1 and "No such file or directory" in lost[0], out


def test_the_shipped_configuration_is_the_defaults_and_a_wrong_key_is_refused(tmp_path):
    from pathlib import Path

    from pinpad import config as pad_config
    shipped = Path(__file__).resolve().parent.parent / "config" / "pinpad.toml"
    assert pad_config.load(shipped) == pad_config.PadConfig()
    bad = tmp_path / "pinpad.toml"
    bad.write_text('keypad = "auto"\nmax_wrong_pins = 50\n')
    run = subprocess.run([sys.executable, "-m", "pinpad.cli", "--config", str(bad), "list"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 78 and "max_wrong_pins" in run.stderr
