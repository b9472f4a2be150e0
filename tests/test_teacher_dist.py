"""The teacher's distribution, `classcam-teacher`, on its own: built into a wheel from dist/teacher,
installed into a fresh venv with nothing else, and used as a teacher would: `keys new`, `account
ls` and `account get` against the reference server, `decrypt` of a real recording. The commands
run with the POSIX-only modules made unimportable, as on Windows, and afterwards no module of the
daemon, the simulator, a GPIO library or a POSIX-only module is in `sys.modules`. Every
dependency resolves to wheels for Windows and macOS.

The dependencies' wheels are kept in .venv/teacher-wheels (fetched once through pip's cache);
where none are kept and the registry cannot be reached, these tests are skipped, never failed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from formats.card import TeacherCard
from hwsim.account_server import AccountServer
from hwsim.lab import PASSPHRASE
from hwsim.pki import TEACHER, TestPki
from tests.media import recording_dirs

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".venv" / "teacher-wheels"
# Standard-library modules a Windows Python does not have (the stdlib's own users fall back).
POSIX_ONLY = ["fcntl", "grp", "pwd", "termios", "resource", "pty", "tty", "syslog", "crypt",
              "spwd", "nis", "ossaudiodev", "curses", "readline", "_posixsubprocess"]
NOT_ON_A_TEACHERS_COMPUTER = ["appliance", "capture", "uploader", "led_indicator", "hwsim",
                              "tests", "gpiozero", "RPi", "lgpio", "pigpio", "sdnotify", "serial",
                              "pydantic", "tenacity", "numpy", "cv2", "sounddevice"]
PLATFORMS = ["win_amd64", "macosx_12_0_arm64", "macosx_12_0_x86_64"]
NETWORK_TROUBLE = ("NewConnectionError", "Failed to establish a new connection",
                   "Could not fetch URL", "Temporary failure in name resolution",
                   "Network is unreachable", "ConnectTimeout", "ReadTimeout", "ProxyError",
                   "No matching distribution found for classcam")

# Runs inside the fresh venv: the `classcam` console script's function, each command in turn,
# with the POSIX-only modules unimportable; then what was imported.
DRIVER = """
import importlib.abc, json, sys
from importlib.metadata import entry_points

BLOCKED = set(json.loads(sys.argv[3]))
tried = []

class AsOnWindows(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

already = sorted(BLOCKED & set(sys.modules))
sys.meta_path.insert(0, AsOnWindows())
(script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "classcam"]
main = script.load()
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as e:
        codes.append(e.code)
with open(sys.argv[2], "w") as f:
    json.dump({"codes": codes, "script": script.value, "modules": sorted(sys.modules),
               "blocked_at_start": already, "tried": tried,
               "files": {m: getattr(sys.modules[m], "__file__", None)
                         for m in ("formats", "teacher_tools")}}, f)
"""


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def clean_env() -> dict[str, str]:
    """The environment without anything that would lead a fresh venv back to this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["CLASSCAM_PASSPHRASE"] = PASSPHRASE
    return env


def skip_if_offline(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0 and any(m in result.stderr for m in NETWORK_TROUBLE):
        pytest.skip(f"{what}: the package registry cannot be reached "
                    f"({result.stderr.strip().splitlines()[-1][:160]})")


@pytest.fixture(scope="module")
def teacher_wheel(tmp_path_factory) -> Path:
    """classcam-teacher built from a clean copy of its files (no build/ left in the checkout)."""
    src = tmp_path_factory.mktemp("teacher-src")
    (src / "dist" / "teacher").mkdir(parents=True)
    shutil.copy(ROOT / "dist" / "teacher" / "pyproject.toml", src / "dist" / "teacher")
    for package in ("formats", "teacher_tools"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("teacher-wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", out, src / "dist" / "teacher"], timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("classcam_teacher-*.whl")
    return wheel


@pytest.fixture(scope="module")
def teacher_venv(teacher_wheel, tmp_path_factory) -> Path:
    """A fresh venv with classcam-teacher and its dependencies, and nothing else."""
    venv = tmp_path_factory.mktemp("teacher-venv") / "venv"
    made = run([sys.executable, "-m", "venv", venv], timeout=300)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
               "--find-links", teacher_wheel.parent, "--find-links", WHEELHOUSE, teacher_wheel]
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    done = run(install, timeout=600, env=clean_env())
    if done.returncode != 0:
        # Not all kept yet: fetch the dependencies' wheels once (pip's cache makes this quick).
        fetched = run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                       "--timeout", "30", "-d", WHEELHOUSE, teacher_wheel], timeout=600)
        skip_if_offline(fetched, "fetching the teacher's dependencies")
        assert fetched.returncode == 0, fetched.stderr
        done = run(install, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr
    return venv


@pytest.fixture(scope="module")
def account_with_a_recording(lab_template):
    """The reference server holding one real recording of t-evans, as the unit uploaded it."""
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root)
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.2)["ok"]
    (recording,) = recording_dirs(lab)
    recording_id = json.loads((recording / "recording.json").read_bytes())["recording_id"]
    store = root / "account"
    shutil.copytree(recording, store / "t-evans" / recording_id,
                    ignore=lambda d, names: [n for n in names if not n.endswith(".age")])
    pki = TestPki.create(root / "pki")
    server = AccountServer(store, pki)
    server.start()
    try:
        yield server, pki, lab, recording_id
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_teachers_classcam_has_only_the_teachers_commands(teacher_venv, tmp_path):
    shown = run([teacher_venv / "bin" / "classcam", "--help"], cwd=tmp_path, env=clean_env(),
                timeout=60)
    assert shown.returncode == 0, shown.stderr
    commands = shown.stdout.split("positional arguments:")[1].split("options:")[0]
    assert [line.split()[0] for line in commands.splitlines()[2:] if line.strip()] == \
        ["keys", "decrypt", "account"]
    listed = run([teacher_venv / "bin" / "python", "-m", "pip", "list", "--format=json"],
                 env=clean_env(), timeout=60)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "classcam-teacher" in names
    assert names.isdisjoint({"classcam", "classcam-sim", "gpiozero", "sdnotify", "pyserial",
                             "pydantic", "numpy", "opencv-python-headless"})


def test_keys_account_and_decrypt_run_alone_without_the_daemon_or_posix_modules(
        teacher_venv, account_with_a_recording, tmp_path):
    server, pki, lab, recording_id = account_with_a_recording
    me = pki.issue("t-evans", TEACHER)
    account = ["--url", server.url, "--teacher-id", "t-evans", "--cert", str(me.cert),
               "--key", str(me.key), "--ca", str(pki.ca_cert)]
    keys, downloads, lesson = tmp_path / "keys", tmp_path / "lesson-files", tmp_path / "lesson.mp4"
    commands = [
        ["keys", "new", "--teacher-id", "t-okafor", "--name", "Ms Okafor", "--dir", str(keys)],
        ["account", "ls", *account],
        ["account", "get", recording_id, "-o", str(downloads), *account],
        ["decrypt", str(downloads), "-o", str(lesson), "--trust-new-unit", "--known-devices",
         str(tmp_path / "known.json"), "--identity", str(lab.key_files("t-evans").identity)],
    ]
    (tmp_path / "driver.py").write_text(DRIVER)
    report = tmp_path / "report.json"
    ran = run([teacher_venv / "bin" / "python", tmp_path / "driver.py", json.dumps(commands),
               report, json.dumps(POSIX_ONLY)], cwd=tmp_path, env=clean_env(), timeout=300)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(report.read_text())
    assert result["codes"] == [0, 0, 0, 0], ran.stderr
    assert result["script"] == "teacher_tools.cli:main"
    # The code that ran is the installed wheel's, not this checkout's.
    assert all(str(teacher_venv) in path for path in result["files"].values()), result["files"]
    # What each command did.
    assert TeacherCard.parse((keys / "t-okafor.card.json").read_bytes()).name == "Ms Okafor"
    assert f"{recording_id}\t" in ran.stdout and "\tmanifest" in ran.stdout
    assert {p.name for p in downloads.iterdir()} == \
        set(server.stored("t-evans")[recording_id])
    assert lesson.stat().st_size > 0 and "segment(s)" in ran.stdout
    # What was imported: nothing of the daemon, the simulator or a GPIO library; nothing POSIX-only.
    tops = {m.split(".")[0] for m in result["modules"]}
    assert tops.isdisjoint(NOT_ON_A_TEACHERS_COMPUTER), tops & set(NOT_ON_A_TEACHERS_COMPUTER)
    assert result["blocked_at_start"] == [] and tops.isdisjoint(POSIX_ONLY)
    assert {"formats", "teacher_tools", "av", "pyrage", "requests", "jwt"} <= tops


def test_every_dependency_has_wheels_for_windows_and_macos(teacher_wheel, tmp_path):
    for platform in PLATFORMS:
        report = tmp_path / f"{platform}.json"
        resolved = run([sys.executable, "-m", "pip", "install", "-q", "--dry-run",
                        "--ignore-installed", "--only-binary=:all:", "--platform", platform,
                        "--python-version", "3.11", "--timeout", "30", "--report", report,
                        teacher_wheel], timeout=300)
        skip_if_offline(resolved, f"resolving for {platform}")
        assert resolved.returncode == 0, f"{platform}: {resolved.stderr}"
        chosen = json.loads(report.read_text())["install"]
        files = [item["download_info"]["url"].rsplit("/", 1)[1] for item in chosen]
        names = {item["metadata"]["name"].lower() for item in chosen}
        assert {"cryptography", "pyjwt", "pynacl", "pyrage", "av", "requests"} <= names, files
        assert all(f.endswith(".whl") for f in files), files
        assert all(f.endswith("-none-any.whl") or platform.split("_")[0] in f for f in files), \
            f"{platform}: {files}"
